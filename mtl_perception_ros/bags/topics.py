"""The bags of this project: topics, types, frames and constants (no rosbags import).

The bags that `python -m training.export.to_bag` writes (and `mtl_bag_play` plays):

- /points, sensor_msgs/PointCloud2, frame `vehicle`, LiDAR stamp: x, y, z, intensity packed
  float32 (16-byte points); intensity = reflectance * 255, which the node's default
  `intensity_scale` 1/255 undoes.
- /camera/image_raw, sensor_msgs/Image rgb8, frame `camera_front`, camera stamp: the undistorted image.
- or, exported with `--compressed`, /camera/image_raw/compressed, sensor_msgs/CompressedImage
  JPEG (format 'rgb8; jpeg compressed bgr8', as image_transport writes it), the same header.
- /camera/camera_info, sensor_msgs/CameraInfo, the image's header: K, P = [K 0], D = 5 zeros
  (plumb_bob), R = I, width, height.
- /tf_static, tf2_msgs/TFMessage: vehicle -> lidar (identity: the merged cloud is in the vehicle
  frame) and vehicle -> camera_front (the optical frame; its pose = inverse of
  `vehicle_to_camera`); written at the start and again when the calibration changes.
- /gt/detections, vision_msgs/Detection2DArray, the cloud's header: ground-truth boxes in the
  metric BEV convention of messages.outputs.detection2d_array; score 1; `id` = track id ('' unknown).
- /gt/semantic, sensor_msgs/Image mono8, the image's header: class id per pixel (255 = ignore).

Several cameras (chunks with a surround rig, or any camera other than front_center): the topics
are per camera, named as the node subscribes them for a camera NAME in `cameras`
(`camera_topics`): /NAME/image_raw (or /NAME/image_raw/compressed), /NAME/camera_info, frame
`NAME_optical`, /gt/NAME/semantic; /tf_static holds vehicle -> every camera's frame; metadata's
custom_data `mtl_perception.cameras` lists the cameras (absent: the one-camera layout above).

Receive timestamps (what `ros2 bag play` schedules by) equal the header stamps. /tf_static and
/gt/* are offered reliable + transient local (late subscribers get the latest), the sensor
topics reliable + volatile (bags.qos).

Files are rosbag2 metadata **version 8** (`BAG_VERSION`): ROS 2 Humble reads it (its reader
ignores the newer keys); version 9 writes `offered_qos_profiles` as a YAML list, which Humble's
reader cannot parse. Storage: sqlite3 (default) or MCAP.

The modules: bags.typestore (message types, (de)serialization, the rosbags message factory),
bags.qos, bags.writer (BagWriter), bags.reader (BagReader and its numpy payloads).
"""
from __future__ import annotations

from dataclasses import dataclass

BAG_VERSION = 8

POINTS_TOPIC = '/points'
IMAGE_TOPIC = '/camera/image_raw'
COMPRESSED_IMAGE_TOPIC = '/camera/image_raw/compressed'
CAMERA_INFO_TOPIC = '/camera/camera_info'
TF_STATIC_TOPIC = '/tf_static'
GT_DETECTIONS_TOPIC = '/gt/detections'
GT_SEMANTIC_TOPIC = '/gt/semantic'
VEHICLE_FRAME = 'vehicle'
LIDAR_FRAME = 'lidar'
CAMERA_FRAME = 'camera_front'
POINT_FIELDS = ('x', 'y', 'z', 'intensity')
INTENSITY_SCALE_IN_BAG = 255.0          # bag intensity = reflectance * 255
DEFAULT_INTENSITY_SCALE = 1.0 / 255.0   # the node's default `intensity_scale`

POINTCLOUD2 = 'sensor_msgs/msg/PointCloud2'
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
TF_MESSAGE = 'tf2_msgs/msg/TFMessage'
DETECTION2D_ARRAY = 'vision_msgs/msg/Detection2DArray'


@dataclass(frozen=True)
class CameraTopics:
    """The bag topics and frame of one camera."""

    image: str
    compressed_image: str
    camera_info: str
    gt_semantic: str
    frame: str


def camera_topics(camera: str | None = None) -> CameraTopics:
    """Topics of camera `camera` in a several-camera bag; None: the one-camera layout
    (/camera/image_raw, frame camera_front, /gt/semantic)."""
    if camera is None:
        return CameraTopics(IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC, CAMERA_INFO_TOPIC, GT_SEMANTIC_TOPIC, CAMERA_FRAME)
    if not camera or '/' in camera or camera != camera.strip():
        raise ValueError(f'camera name {camera!r}: expected a plain name such as front_left')
    return CameraTopics(f'/{camera}/image_raw', f'/{camera}/image_raw/compressed', f'/{camera}/camera_info',
                        f'/gt/{camera}/semantic', f'{camera}_optical')


def is_latched_topic(topic: str) -> bool:
    """/tf_static and the ground-truth topics (/gt/...) are offered transient local."""
    return topic == TF_STATIC_TOPIC or topic.startswith('/gt/')
