"""Chunks -> rosbag2 -> numpy: every array and stamp survives, the timing rules, Humble's format.

No ROS needed except the last tests (marked `ros`), which check that the shared message builders
make the same messages with the rosbags factory as with the rclpy one the node uses.
"""
from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
import yaml

from mtl_perception_ros.bags import topics as bt
from mtl_perception_ros.bags.reader import BagReader
from mtl_perception_ros.bags.typestore import bag_message, ensure_msgtype, find_msg_file, serialize
from mtl_perception_ros.core.camera import OPTICAL_FROM_FORWARD_LEFT_UP
from mtl_perception_ros.messages.stamps import header_msg
from mtl_perception_ros.messages.transforms import quaternion_to_rotation, rotation_to_quaternion
from training.export import to_bag as export_bag
from training.data.chunks import ChunkReader, write_chunk
from training.data.frame import Frame
from training.data.toy_chunks import write_toy_chunks

BOX_NAMES = ['car', 'truck', 'pedestrian', 'cyclist']
T0_US = 1_533_638_528_740_366        # a real A2D2-era TAI microsecond stamp


def quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope='module')
def toy_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp('toy')
    write_toy_chunks(out, scenes=3, frames=3, val_scenes=1, seed=1, image_hw=(24, 40))
    return out


def chunk_frames(paths) -> list[Frame]:
    return [ChunkReader(p).frame(i) for p in paths for i in range(len(ChunkReader(p)))]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_round_trip_keeps_arrays_stamps_and_calibration(toy_dir, tmp_path, storage):
    counts = export_bag.export_bag(toy_dir, tmp_path / 'bag', split='all', storage=storage, log=quiet)
    frames = chunk_frames([toy_dir / 'train_0000.npz', toy_dir / 'val_0000.npz'])   # toy00, toy01 | toy02
    frames.sort(key=lambda f: f.name)
    assert counts == {'/tf_static': 1, '/points': 9, '/camera/image_raw': 9, '/camera/camera_info': 9, '/gt/detections': 9,
                      '/gt/semantic': 9}

    with BagReader(tmp_path / 'bag') as reader:
        assert reader.metadata['version'] == 8
        assert reader.metadata['storage_identifier'] == storage
        assert json.loads(reader.custom_data['mtl_perception.box_classes']) == BOX_NAMES
        points = list(reader.decoded([bt.POINTS_TOPIC]))
        raw_intensity = list(reader.decoded([bt.POINTS_TOPIC], intensity_scale=1.0))
        images = list(reader.decoded([bt.IMAGE_TOPIC]))
        infos = list(reader.decoded([bt.CAMERA_INFO_TOPIC]))
        truth = list(reader.decoded([bt.GT_DETECTIONS_TOPIC]))
        semantic = list(reader.decoded([bt.GT_SEMANTIC_TOPIC]))
        vehicle_to_camera = reader.vehicle_to_camera()
        lidar_pose = reader.static_transform(bt.VEHICLE_FRAME, bt.LIDAR_FRAME)
        all_times = [t for _, _, t, _ in reader.raw()]

    # Stamps worked out by hand: toy frames have no stamps -> 10 Hz from SYNTHETIC_START_NS, each
    # scene 0.2 s after the previous one's last message; camera = LiDAR stamp; receive = header stamp.
    start, period, gap = export_bag.SYNTHETIC_START_NS, 100_000_000, 200_000_000
    expected = [start, start + period, start + 2 * period]
    expected += [expected[-1] + gap + k * period for k in range(3)]
    expected += [expected[-1] + gap + k * period for k in range(3)]
    for messages in (points, images, infos, truth, semantic):
        assert [m.stamp_ns for m in messages] == expected
        assert [m.timestamp_ns for m in messages] == expected
    assert all_times == sorted(all_times)

    for frame, cloud, raw, image, info, gt, labels in zip(frames, points, raw_intensity, images, infos, truth,
                                                         semantic):
        assert cloud.frame_id == 'vehicle' and image.frame_id == info.frame_id == labels.frame_id == 'camera_front'
        np.testing.assert_array_equal(cloud.data[:, :3], frame.points[:, :3])
        np.testing.assert_allclose(cloud.data[:, 3], frame.points[:, 3], rtol=0, atol=1e-6)   # *255 then /255
        np.testing.assert_array_equal(raw.data[:, 3], frame.points[:, 3] * np.float32(255))
        np.testing.assert_array_equal(image.data, frame.image)
        np.testing.assert_array_equal(labels.data, frame.class_map)
        np.testing.assert_array_equal(info.data.camera_matrix, frame.camera_matrix)
        assert info.data.image_hw == frame.image.shape[:2] and not info.data.distortion.any()
        boxes = np.asarray(frame.boxes, dtype=np.float64)
        np.testing.assert_array_equal(gt.data.boxes, boxes[:, [0, 1, 3, 4, 6]])
        assert gt.data.class_names == [BOX_NAMES[c] for c in frame.box_classes]
        np.testing.assert_array_equal(gt.data.track_ids, frame.track_ids)
        assert (gt.data.scores == 1.0).all() and gt.frame_id == 'vehicle'
    np.testing.assert_allclose(vehicle_to_camera, OPTICAL_FROM_FORWARD_LEFT_UP, atol=1e-12)
    np.testing.assert_array_equal(lidar_pose, np.eye(4))


def frame_with_stamps(scene: str, index: int, lidar_us: int, camera_us: int, track_ids=(7, -1),
                      class_map: bool = True, shift_m: float = 0.0) -> Frame:
    rng = np.random.default_rng(index)
    vehicle_to_camera = OPTICAL_FROM_FORWARD_LEFT_UP.copy()
    vehicle_to_camera[:3, 3] = [0.0, shift_m, 0.0]
    return Frame(name=f'{scene}/{index:09d}', scene=scene, points=rng.uniform(0, 1, (20, 4)).astype(np.float32),
                 image=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
                 class_map=rng.integers(0, 13, (6, 8), dtype=np.uint8) if class_map else None,
                 boxes=rng.normal(size=(len(track_ids), 7)).astype(np.float32),
                 box_classes=np.arange(len(track_ids), dtype=np.int64) % 4,
                 track_ids=np.array(track_ids, dtype=np.int64),
                 camera_matrix=np.array([[5.0, 0, 3.5], [0, 5.0, 2.5], [0, 0, 1]]),
                 vehicle_to_camera=vehicle_to_camera, camera_timestamp_us=camera_us, lidar_timestamp_us=lidar_us)


def test_compressed_export_writes_jpeg_on_the_compressed_topic(toy_dir, tmp_path):
    counts = export_bag.export_bag(toy_dir, tmp_path / 'bag', split='all', log=quiet, compressed=True)
    assert counts['/camera/image_raw/compressed'] == 9 and '/camera/image_raw' not in counts
    frames = sorted(chunk_frames([toy_dir / 'train_0000.npz', toy_dir / 'val_0000.npz']), key=lambda f: f.name)
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.topics[bt.COMPRESSED_IMAGE_TOPIC][0] == bt.COMPRESSED_IMAGE
        messages = list(reader.decoded([bt.COMPRESSED_IMAGE_TOPIC]))
        infos = list(reader.decoded([bt.CAMERA_INFO_TOPIC]))
    assert all(m.msg.format == 'rgb8; jpeg compressed bgr8' for m in messages)
    assert [m.stamp_ns for m in messages] == [m.stamp_ns for m in infos]     # the image's header
    for message, frame in zip(messages, frames):
        assert message.data.shape == frame.image.shape
        assert np.abs(message.data.astype(int) - frame.image).mean() < 8          # JPEG quality 90


def test_recorded_stamps_offsets_and_scene_shift(tmp_path):
    # Scene b is an hour later with the camera 2 ms early; written out of order on purpose.
    b0 = T0_US + 3_600_000_000
    frames = [frame_with_stamps('b', 11, b0 + 99_990, b0 + 97_990, shift_m=0.5),
              frame_with_stamps('a', 2, T0_US + 200_050, T0_US + 204_272, class_map=False),
              frame_with_stamps('a', 0, T0_US, T0_US + 4_222),
              frame_with_stamps('b', 10, b0, b0 - 2_000, shift_m=0.5),
              frame_with_stamps('a', 1, T0_US + 100_000, T0_US + 104_222)]
    write_chunk(tmp_path / 'val_0000.npz', frames)
    counts = export_bag.export_bag(tmp_path / 'val_0000.npz', tmp_path / 'bag', scene_gap_s=1.5, log=quiet)
    assert counts['/gt/semantic'] == 4 and counts['/points'] == 5
    assert counts['/tf_static'] == 2          # scene b's camera moved: the transforms are written again

    # On paper: scene a keeps its stamps; it ends with frame 2's image at T0 + 204_272 us. Scene b
    # starts --scene-gap 1.5 s later with its earliest message (frame 10's image, 2 ms before its cloud).
    a_end_ns = (T0_US + 204_272) * 1000
    b_cloud0 = a_end_ns + 1_500_000_000 + 2_000_000
    expected_points = [T0_US * 1000, (T0_US + 100_000) * 1000, (T0_US + 200_050) * 1000,
                       b_cloud0, b_cloud0 + 99_990_000]
    expected_images = [(T0_US + 4_222) * 1000, (T0_US + 104_222) * 1000, a_end_ns,
                       b_cloud0 - 2_000_000, b_cloud0 + 97_990_000]
    with BagReader(tmp_path / 'bag') as reader:
        assert [m.stamp_ns for m in reader.decoded([bt.POINTS_TOPIC])] == expected_points
        assert [m.stamp_ns for m in reader.decoded([bt.IMAGE_TOPIC])] == expected_images
        assert [m.stamp_ns for m in reader.decoded([bt.GT_SEMANTIC_TOPIC])] == expected_images[:2] + expected_images[3:]
        truth = reader.by_stamp(bt.GT_DETECTIONS_TOPIC)
        assert sorted(truth) == expected_points
        np.testing.assert_array_equal(truth[expected_points[0]].data.track_ids, [7, -1])
        assert [d.id for d in truth[expected_points[0]].msg.detections] == ['7', '']
        transforms = [m for m in reader.decoded([bt.TF_STATIC_TOPIC])]
        assert [m.timestamp_ns for m in transforms] == [expected_points[0], expected_images[3]]
        np.testing.assert_allclose(reader.vehicle_to_camera()[:3, 3], [0.0, 0.5, 0.0], atol=1e-12)
        scenes = json.loads(reader.custom_data['mtl_perception.scenes'])
        times = [t for _, _, t, _ in reader.raw()]
    assert [s['scene'] for s in scenes] == ['a', 'b']
    assert scenes[0]['shift_ns'] == 0 and scenes[1]['shift_ns'] == b_cloud0 - b0 * 1000
    assert scenes[1]['timing'] == 'recorded'
    # Stored in time order (sequential readers such as MCAP players need it), not only sorted on reading.
    with sqlite3.connect(tmp_path / 'bag' / 'bag.db3') as db:
        stored = [row[0] for row in db.execute('SELECT timestamp FROM messages ORDER BY id')]
    assert stored == sorted(stored) == times


def test_metadata_is_version_8_with_qos_as_humble_reads_it(toy_dir, tmp_path):
    export_bag.main(['--chunks', str(toy_dir), '--out', str(tmp_path / 'bag')])
    info = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())['rosbag2_bagfile_information']
    assert info['version'] == 8 and info['storage_identifier'] == 'sqlite3'
    assert info['relative_file_paths'] == ['bag.db3']            # named after the final folder
    topics = {t['topic_metadata']['name']: t['topic_metadata'] for t in info['topics_with_message_count']}
    assert list(topics) == ['/tf_static', '/points', '/camera/image_raw', '/camera/camera_info', '/gt/detections', '/gt/semantic']
    for topic, meta in topics.items():
        # Humble parses offered_qos_profiles as a YAML string with integer enums (version 9 writes a list).
        assert isinstance(meta['offered_qos_profiles'], str)
        (qos,) = yaml.safe_load(meta['offered_qos_profiles'])
        assert qos['reliability'] == 1                        # reliable
        assert qos['durability'] == (1 if topic in ('/tf_static', '/gt/detections', '/gt/semantic') else 2)
    assert yaml.safe_load(topics['/tf_static']['offered_qos_profiles'])[0]['depth'] == 1
    assert topics['/gt/detections']['type'] == 'vision_msgs/msg/Detection2DArray'
    assert info['message_count'] == 3 * 5 + 1                 # val split only: one scene of 3 frames
    assert not list(tmp_path.glob('.bag.partial-*'))          # the staging folder is gone


def test_scene_selection_max_frames_and_refusals(toy_dir, tmp_path):
    out = tmp_path / 'bag'
    counts = export_bag.export_bag(toy_dir, out, split='train', scenes=['toy01'], max_frames=2, log=quiet)
    assert counts['/points'] == 2
    with pytest.raises(FileExistsError, match='--overwrite'):
        export_bag.export_bag(toy_dir, out, split='train', log=quiet)
    counts = export_bag.export_bag(toy_dir, out, split='train', overwrite=True, log=quiet)
    assert counts['/points'] == 6
    with pytest.raises(ValueError, match=r"scenes \['nowhere'\]"):
        export_bag.export_bag(toy_dir, tmp_path / 'other', scenes=['nowhere'], log=quiet)
    (tmp_path / 'not_a_bag').mkdir()
    with pytest.raises(FileExistsError, match='not a rosbag2 folder'):
        export_bag.export_bag(toy_dir, tmp_path / 'not_a_bag', overwrite=True, log=quiet)
    assert export_bag.main(['--chunks', str(tmp_path / 'missing'), '--out', str(tmp_path / 'x')]) == 1


def test_quaternions_round_trip_for_any_rotation():
    from scipy.spatial.transform import Rotation

    rotations = Rotation.random(200, random_state=0).as_matrix().tolist()
    rotations += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3),
                  OPTICAL_FROM_FORWARD_LEFT_UP[:3, :3]]                       # 180 degree turns, identity
    for rotation in rotations:
        quaternion = rotation_to_quaternion(rotation)
        assert quaternion[3] >= 0 and abs(np.linalg.norm(quaternion) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_to_rotation(quaternion), rotation, atol=1e-12)
        expected = Rotation.from_matrix(rotation).as_quat()
        assert min(np.abs(quaternion - expected).max(), np.abs(quaternion + expected).max()) < 1e-12


def test_reader_names_missing_topics_and_folders(toy_dir, tmp_path):
    export_bag.export_bag(toy_dir, tmp_path / 'bag', log=quiet)
    with BagReader(tmp_path / 'bag') as reader:
        with pytest.raises(KeyError, match='/nothing'):
            list(reader.raw(['/nothing']))
    with pytest.raises(FileNotFoundError, match='metadata.yaml'):
        BagReader(tmp_path)


# ----------------------------------------------------------------------------- same bytes as the node's builders
@pytest.mark.ros
def test_shared_builders_make_the_same_messages_with_both_factories():
    # Compared as rclpy messages: Fast CDR leaves alignment padding bytes uninitialised.
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image, PointCloud2
    from std_msgs.msg import Header
    from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
    from visualization_msgs.msg import MarkerArray

    from mtl_perception_ros.core.labels import LabelSet
    from mtl_perception_ros.messages.image import mono8_to_image, rgb_to_image
    from mtl_perception_ros.messages.outputs import box_markers, detection2d_array, detection3d_array, label_info
    from mtl_perception_ros.messages.pointcloud2 import array_to_pointcloud2
    from mtl_perception_ros.messages.transforms import transform_stamped

    def as_rclpy(msg, cls):
        return deserialize_message(serialize(msg), cls)

    def sent(msg):   # float32 fields (colours, thresholds) are rounded on the wire only
        return deserialize_message(serialize_message(msg), type(msg))

    rng = np.random.default_rng(3)
    stamp_ns = 1_533_638_528_740_366_123
    header = Header(frame_id='vehicle')
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    points = rng.normal(size=(50, 4)).astype(np.float32)
    points[3, 1] = np.nan
    bag_header = header_msg(stamp_ns, 'vehicle', new=bag_message)
    assert as_rclpy(array_to_pointcloud2(points, header=bag_header, new=bag_message), PointCloud2) == \
        array_to_pointcloud2(points, header=header)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    labels = rng.integers(0, 13, (5, 7), dtype=np.uint8)
    assert as_rclpy(rgb_to_image(image, bag_header, new=bag_message), Image) == rgb_to_image(image, header)
    assert as_rclpy(mono8_to_image(labels, bag_header, new=bag_message), Image) == mono8_to_image(labels, header)
    boxes = rng.normal(size=(3, 7))
    classes, scores, track_ids = np.array([0, 2, 3]), np.array([0.9, 0.5, 0.25]), np.array([4, -1, 12])
    ours = as_rclpy(detection2d_array(boxes, BOX_NAMES, classes, scores, bag_header, track_ids, new=bag_message),
                    Detection2DArray)
    assert ours == detection2d_array(boxes, BOX_NAMES, classes, scores, header, track_ids)
    assert ours.detections[1].id == '' and ours.detections[2].id == '12'
    # the default pose of results[0] is the identity (Quaternion.w defaults to 1, which rosbags does not know)
    assert ours.detections[0].results[0].pose.pose.orientation.w == 1.0
    assert as_rclpy(detection3d_array(boxes, BOX_NAMES, classes, scores, bag_header, track_ids, new=bag_message),
                    Detection3DArray) == detection3d_array(boxes, BOX_NAMES, classes, scores, header, track_ids)
    colors, velocities = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)], rng.normal(size=(3, 2))
    markers = as_rclpy(box_markers(boxes, BOX_NAMES, classes, scores, bag_header, colors, track_ids, velocities,
                                   lifetime_s=0.25, new=bag_message), MarkerArray)
    assert len(markers.markers) == 1 + 3 * 3
    assert markers == sent(box_markers(boxes, BOX_NAMES, classes, scores, header, colors, track_ids, velocities,
                                       lifetime_s=0.25))
    semantic = LabelSet(names=('road', 'car'), colors=((1, 1, 1), (2, 2, 2)), name='sem')
    assert as_rclpy(label_info(semantic, bag_header, 0.4, new=bag_message), LabelInfo) == \
        sent(label_info(semantic, header, 0.4))
    pose = OPTICAL_FROM_FORWARD_LEFT_UP.copy()
    pose[:3, 3] = [1.5, -0.25, 2.0]
    assert as_rclpy(transform_stamped(pose, 'camera_front', bag_header, new=bag_message), TransformStamped) == \
        transform_stamped(pose, 'camera_front', header)


@pytest.mark.ros
def test_camera_info_and_transforms_deserialize_in_rclpy():
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo

    from mtl_perception_ros.messages.camera_info import undistorted_camera_info

    k = np.array([[1687.3, 0, 965.4], [0, 1783.4, 684.4], [0, 0, 1]])
    bag_info = undistorted_camera_info(k, (1208, 1920), header_msg(5, 'camera_front', new=bag_message), new=bag_message)
    info = deserialize_message(serialize(bag_info), CameraInfo)
    assert (info.height, info.width, info.header.frame_id) == (1208, 1920, 'camera_front')
    np.testing.assert_array_equal(np.reshape(info.k, (3, 3)), k)
    np.testing.assert_array_equal(np.reshape(info.p, (3, 4))[:, :3], k)
    assert info.distortion_model == 'plumb_bob' and list(info.d) == [0.0] * 5


def test_unknown_types_are_read_from_installed_msg_files():
    from rosbags.typesys import Stores, get_typestore

    if find_msg_file('sensor_msgs/msg/CameraInfo') is None:
        pytest.skip('no installed share/sensor_msgs/msg/CameraInfo.msg (needs a ROS prefix)')
    empty = get_typestore(Stores.EMPTY)
    assert ensure_msgtype(empty, 'sensor_msgs/msg/CameraInfo')
    # Its dependencies came along, and the definitions hash like rosbags' own Humble store.
    for name in ('sensor_msgs/msg/CameraInfo', 'std_msgs/msg/Header', 'builtin_interfaces/msg/Time',
                 'sensor_msgs/msg/RegionOfInterest'):
        assert empty.hash_rihs01(name) == get_typestore(Stores.ROS2_HUMBLE).hash_rihs01(name)
    assert not ensure_msgtype(empty, 'no_such_pkg/msg/Nothing')
    assert find_msg_file('vision_msgs/msg/LabelInfo') is not None        # third_party/ in the source tree
