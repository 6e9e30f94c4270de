"""The perception node: PointCloud2 + Image in, BEV detections and semantic images out.

Thin ROS layer around mtl_perception_ros.core.frame_pipeline.FramePipeline (pairing, the time
policy, inference, tracking; the same code offline bag evaluation runs) (docs/node.md: topics,
parameters, the metric BEV box convention, time and stamps). Threads:
- the executor thread runs the subscription callbacks, which only hand stamps and the messages
  themselves to the pipeline's pairing (never convert or infer), the clock-jump callback and the
  diagnostics timer;
- one worker thread takes the newest paired frame from a latest-only slot, converts its
  messages, runs the pipeline's processing and publishes. A slow model therefore drops old
  pairs (counted) instead of building up latency; the tracker predicts across the dropped frames.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from mtl_perception_ros.core import pipeline_parameters
from mtl_perception_ros.core.checkpoint_info import CheckpointError
from mtl_perception_ros.core.frame_pipeline import FramePipeline
from mtl_perception_ros.core.parameters import (CAMERA_SCHEMA, SCHEMA, ParameterError, camera_parameter,
                                                ros_descriptor, validate_all, validate_update)
from mtl_perception_ros.messages.camera_info import camera_info_data
from mtl_perception_ros.messages.conversion_errors import ConversionError
from mtl_perception_ros.messages.camera_image import camera_image_to_rgb
from mtl_perception_ros.messages.image import ImageBuffer
from mtl_perception_ros.messages.marker_serialization import BoxMarkerSerializer, MarkerLayoutError
from mtl_perception_ros.core.onnx_files import BackendError
from mtl_perception_ros.core.onnx_inference import open_inference
from mtl_perception_ros.core.labels import blend
from mtl_perception_ros.core.latency import latency_summary
from mtl_perception_ros.messages.outputs import box_markers, detection2d_array, detection3d_array, label_info
from mtl_perception_ros.messages.pointcloud2 import pointcloud2_to_array
from mtl_perception_ros.messages.stamps import stamp_to_ns
from mtl_perception_ros.ros.shutdown_signals import init_ros, main_frame, spin_until_stopped
from mtl_perception_ros.ros.tf_lookup import TfLookup
from mtl_perception_ros.core.tracking import Tracker

class StartupError(Exception):
    """The node cannot start (parameters, checkpoint, calibration): the message says what to fix."""


class LatestOnlySlot:
    """A one-element mailbox: `put` replaces what the worker has not taken yet (and says so)."""

    def __init__(self):
        self._item = None
        self._condition = threading.Condition()
        self._closed = False

    def put(self, item) -> bool:
        """Store `item`; True when an older, untaken item was overwritten."""
        with self._condition:
            replaced = self._item is not None
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout_s: float = 0.5):
        with self._condition:
            if self._item is None and not self._closed:
                self._condition.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def close(self):
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class LatencyStats:
    """Bounded window of recent per-stage latencies (ms) for diagnostics."""

    def __init__(self, window: int = 200):
        self._samples: dict[str, deque] = {}
        self._window = window

    def add(self, stage: str, value_ms: float):
        self._samples.setdefault(stage, deque(maxlen=self._window)).append(value_ms)

    def summary(self) -> dict[str, tuple[float, float]]:
        """stage -> (p50, p95) in ms."""
        return latency_summary(self._samples)


class _CameraOutputs:
    """One camera's semantic publishers: ~/<camera>/semantic/labels, color, overlay, label_info."""

    def __init__(self, node: Node, camera: str, latched: QoSProfile):
        self.labels = node.create_publisher(Image, f'~/{camera}/semantic/labels', 10)
        self.color = node.create_publisher(Image, f'~/{camera}/semantic/color', 10)
        self.overlay = node.create_publisher(Image, f'~/{camera}/semantic/overlay', 10)
        self.label_info = node.create_publisher(LabelInfo, f'~/{camera}/semantic/label_info', latched)
        # the pixels of the outgoing images, reused every frame (messages.image.ImageBuffer)
        self.labels_buffer, self.color_buffer, self.overlay_buffer = ImageBuffer(), ImageBuffer(), ImageBuffer()

    def wanted(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in (self.labels, self.color, self.overlay))


class MtlPerceptionNode(Node):
    """Subscribes `points` and per camera `<camera>/image_raw[/compressed]` + `<camera>/camera_info`;
    publishes `~/detections`, `~/tracks`, `~/<camera>/semantic/*`, `/diagnostics`."""

    def __init__(self, **kwargs):
        super().__init__('mtl_perception', **kwargs)
        p = self._declare_parameters()
        self.params = p                  # validated values; replaced (never changed in place) on `ros2 param set`
        self._lock = threading.Lock()
        self.latency = LatencyStats()
        self._last_warning = {}
        self._received = Counter()
        self._started = time.monotonic()

        try:
            # backend onnxruntime on the CPU runs without torch (core.onnx_inference) where the export allows
            self.inference, note = open_inference(
                p['model_path'], device=p['device'], **pipeline_parameters.inference_backend(p),
                **pipeline_parameters.decoding(p), threads=p['inference_threads'], max_views=len(p['cameras']))
            if note:
                self.get_logger().warn(note)
        except BackendError as error:
            raise StartupError(f"cannot run backend {p['backend']} (parameters backend, onnx_dir, device, "
                               f"precision): {error}") from None
        except (CheckpointError, FileNotFoundError, IsADirectoryError, ValueError) as error:
            raise StartupError(f"cannot load the model (parameter model_path='{p['model_path']}'): {error}") from None
        except RuntimeError as error:       # e.g. a CUDA device that fails to initialise
            raise StartupError(f"cannot run the model on device '{p['device']}': {error}") from None
        calibrations = pipeline_parameters.camera_calibrations(p)    # validated with the parameters
        self.cameras = tuple(p['cameras'])
        tracker = None
        if p['tracking_enabled']:
            tracker_config, unknown = pipeline_parameters.tracking_config(p, self.inference.detection_labels.names)
            self._warn_unknown_gate_classes(unknown)
            tracker = Tracker(tracker_config)
        config = pipeline_parameters.pipeline_config(p)
        # Extrinsics: TF (cloud frame -> image frame at the cloud's stamp), NAME.lidar_to_camera as fallback.
        self.tf = TfLookup(self)
        self.pipeline = FramePipeline(self.inference, calibrations, config, tracker, notify=self._on_pipeline_event,
                                      transforms=self._lookup_transform if self.tf.available else None)
        self.tracker = tracker
        self._slot = LatestOnlySlot()
        # /clock going back under use_sim_time (or the clock source changing) restarts pairing and tracking.
        self._clock_jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(seconds=-config.time_jump_threshold_s),
                          on_clock_change=True), post_callback=self._on_clock_jump)

        reliable = p['input_qos'] == 'reliable'
        input_qos = QoSProfile(depth=p['queue_size'], reliability=ReliabilityPolicy.RELIABLE,
                               history=HistoryPolicy.KEEP_LAST) if reliable else qos_profile_sensor_data
        self.create_subscription(PointCloud2, p['points_topic'], self._on_points, input_qos)
        self._image_topics = {}
        for camera in self.cameras:
            compressed = p[camera_parameter(camera, 'image_transport')] == 'compressed'
            topic = f'{camera}/image_raw' + ('/compressed' if compressed else '')
            self.create_subscription(CompressedImage if compressed else Image, topic,
                                     lambda msg, camera=camera: self._on_image(camera, msg), input_qos)
            self.create_subscription(CameraInfo, f'{camera}/camera_info',
                                     lambda msg, camera=camera: self._on_camera_info(camera, msg), input_qos)
            self._image_topics[camera] = topic

        self.pub_detections = self.create_publisher(Detection2DArray, '~/detections', 10)
        self.pub_detections_3d = self.create_publisher(Detection3DArray, '~/detections_3d', 10)
        self.pub_markers = self.create_publisher(MarkerArray, '~/markers', 10)
        self.pub_tracks = self.create_publisher(MarkerArray, '~/tracks', 10)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.camera_outputs = {camera: _CameraOutputs(self, camera, latched) for camera in self.cameras}
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        # outputs are computed only for matched subscribers: /diagnostics says who is matched
        self._outputs = [self.pub_detections, self.pub_detections_3d, self.pub_markers, self.pub_tracks,
                         *(pub for outputs in self.camera_outputs.values()
                           for pub in (outputs.labels, outputs.color, outputs.overlay, outputs.label_info))]
        # markers straight from the box arrays to CDR bytes (~1 ms for 300 boxes instead of ~20 ms)
        try:
            self._marker_bytes = BoxMarkerSerializer.for_installed_messages()
        except MarkerLayoutError as error:
            self._marker_bytes = None
            self.get_logger().warn(f'markers are built as message objects (slower): {error}')

        self.inference.warm_up(iterations=p['warmup_iterations'])
        self._publish_label_info()
        self._worker = threading.Thread(target=self._work, name='mtl_inference', daemon=True)
        self._running = True
        self._worker.start()
        self.create_timer(p['diagnostics_period_s'], self._publish_diagnostics)
        self.get_logger().info(
            f"ready: model {p['model_path']} on {self.inference.device}, {self.inference_description()}; "
            f"inputs '{self.resolve_topic_name(p['points_topic'])}' + "
            + ', '.join(f"'{self.resolve_topic_name(topic)}'" for topic in self._image_topics.values()))

    def inference_description(self) -> str:
        """'backend torch, fp32, 1 CPU thread' (+ ONNX Runtime's execution providers in use)."""
        inference = self.inference
        providers = inference.execution_providers
        threads = inference.threads
        return (f'backend {inference.backend}, {inference.precision}'
                + (f" ({', '.join(providers)})" if providers else '')
                + (f", {threads} CPU thread{'s' if threads != 1 else ''}" if threads else ''))

    # ----------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> dict:
        """Validate the parameters given (params file, -p, launch) against the schema, declare every
        parameter of the schema with its descriptor (range, read_only) and the validated value, and
        install the on-set callback. A bad value is a StartupError naming each bad parameter."""
        given = {name: parameter.value for name, parameter in self._parameter_overrides.items()}
        try:
            values = validate_all(given, required=True)
        except ParameterError as error:     # its message: every problem, joined by '; '
            raise StartupError(f'bad parameters: {error}') from None
        names = [spec.name for spec in SCHEMA] + [
            camera_parameter(camera, spec.name) for camera in values['cameras'] for spec in CAMERA_SCHEMA
            if values.get(camera_parameter(camera, spec.name)) is not None]   # unset calibration: not declared
        for name in names:
            # ignore_override: the override was validated above and is values[name] now (an int
            # given for a float parameter is a float here, which rclpy would refuse as a type change)
            self.declare_parameter(name, values[name], parameter_descriptor(name), ignore_override=True)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        return values

    def _on_set_parameters(self, parameters) -> SetParametersResult:
        """`ros2 param set`: validate against the schema (read-only ones never reach here: rclpy
        refuses them by their descriptor), then apply the run-time ones to the running node."""
        changes = {parameter.name: parameter.value for parameter in parameters}
        try:
            checked = validate_update(self.params, changes)
        except ParameterError as error:
            return SetParametersResult(successful=False, reason=str(error))
        params = {**self.params, **checked}
        try:
            unknown = pipeline_parameters.apply_changes(self.pipeline, params, checked)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.params = params
        self._warn_unknown_gate_classes(unknown)
        if 'score_threshold' in checked:
            self._publish_label_info()
        if checked:
            self.get_logger().info('parameters changed: ' + ', '.join(f'{name}={value!r}'
                                                                      for name, value in checked.items()))
        return SetParametersResult(successful=True)

    def _warn_unknown_gate_classes(self, unknown: list):
        if unknown:
            self.get_logger().warn(
                f'tracking_gate_classes {unknown} are not classes of the model '
                f'{list(self.inference.detection_labels.names)}: ignored (tracking_default_gate_m applies)')

    # ----------------------------------------------------------------------------- callbacks
    # Messages stay ROS messages until the worker converts them: most never reach the model
    # (unpaired images, pairs dropped while busy), and the executor thread must stay quick.
    def _on_points(self, msg: PointCloud2):
        receipt = time.monotonic()
        self._received['points'] += 1
        for frame in self.pipeline.add_points(stamp_to_ns(msg.header.stamp), msg, receipt):
            self._dispatch(frame)

    def _on_image(self, camera: str, msg):
        receipt = time.monotonic()
        self._received[camera] += 1
        for frame in self.pipeline.add_image(camera, stamp_to_ns(msg.header.stamp), msg, receipt):
            self._dispatch(frame)

    def _on_camera_info(self, camera: str, msg: CameraInfo):
        try:
            info = camera_info_data(msg)
        except ConversionError as error:
            self._skip('bad_camera_info', f'{camera}: {error}')
            return
        self.pipeline.apply_camera_info(camera, info.camera_matrix, info.distortion, info.distortion_model,
                                        info.image_size_wh)

    def _lookup_transform(self, target: str, source: str, stamp_ns: int):
        return self.tf.lookup(target, source, stamp_ns, timeout_s=self.params['tf_timeout_s'])

    def _on_clock_jump(self, jump):
        self.tf.clear()
        if jump.clock_change:
            self.pipeline.clock_jumped('the clock source changed (use_sim_time)')
        else:
            self.pipeline.clock_jumped(f'the ROS clock went back {-jump.delta.nanoseconds * 1e-9:.3f} s')

    def _dispatch(self, frame):
        if self._slot.put(frame):
            self.pipeline.count('dropped_busy')

    # ----------------------------------------------------------------------------- worker
    def _work(self):
        while self._running:
            frame = self._slot.take()
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as error:  # noqa: BLE001 - the worker must survive any bad frame
                self._skip('processing_error', f'{type(error).__name__}: {error}')

    def _process(self, frame):
        """Convert the frame's messages, run the pipeline, publish."""
        p = self.params
        t0 = time.monotonic()
        cloud_msg = frame.points
        try:
            points, _ = pointcloud2_to_array(cloud_msg, field_names=tuple(p['point_fields']),
                                             scales=[1.0, 1.0, 1.0, p['intensity_scale']], drop_nonfinite=False)
        except ConversionError as error:
            self._skip('bad_pointcloud', str(error))
            return
        rgbs = {}
        for camera, image_msg in frame.images.items():
            try:
                rgbs[camera] = camera_image_to_rgb(image_msg)
            except ConversionError as error:
                rgbs[camera] = None
                self._skip('bad_image', f'{camera}: {error}; frame runs without this camera')
        t1 = time.monotonic()
        want_semantic = p['publish_semantic'] and any(outputs.wanted() for outputs in self.camera_outputs.values())
        result = self.pipeline.process(frame, points, rgbs, want_class_map=want_semantic,
                                       cloud_frame=cloud_msg.header.frame_id,
                                       image_frames={camera: msg.header.frame_id for camera, msg in frame.images.items()})
        rejected = self.tf.take_rejected_reason()
        if rejected:
            self._on_pipeline_event('warn', 'tf.rejected', f'a transform on /tf or /tf_static was refused: {rejected}')
        if result is None:
            return
        t2 = time.monotonic()
        self._publish_detections(cloud_msg.header, result)
        for camera in result.semantic_maps:
            self._publish_semantics(camera, frame.images[camera].header, result)
        t3 = time.monotonic()

        with self._lock:
            self.latency.add('convert', (t1 - t0) * 1000)
            for stage, value in result.timings_ms.items():
                if stage != 'total':
                    self.latency.add(stage, value)
            self.latency.add('publish', (t3 - t2) * 1000)
            self.latency.add('end_to_end', (t3 - frame.receipt_s) * 1000)

    def _publish_detections(self, header, result):
        """This frame's detections (id = the confirmed track each one updated, '' for none; marker
        arrows = that track's velocity) and, when tracking, the confirmed tracks on ~/tracks."""
        names = self.inference.detection_labels.names
        colors = self.inference.detection_labels.colors
        tracks, track_ids = result.tracks, result.track_ids
        self.pub_detections.publish(detection2d_array(result.boxes, names, result.classes, result.scores, header,
                                                      track_ids=track_ids))
        if self.params['publish_detections_3d'] and self.pub_detections_3d.get_subscription_count() > 0:
            self.pub_detections_3d.publish(
                detection3d_array(result.boxes, names, result.classes, result.scores, header, track_ids=track_ids))
        markers = box_markers if self._marker_bytes is None else self._marker_bytes.serialize
        if self.params['publish_markers'] and self.pub_markers.get_subscription_count() > 0:
            self.pub_markers.publish(markers(result.boxes, names, result.classes, result.scores, header, colors,
                                             track_ids=track_ids, velocities=result.velocities))
        if tracks is not None and self.pub_tracks.get_subscription_count() > 0:
            self.pub_tracks.publish(markers(tracks.boxes, names, tracks.classes, tracks.scores, header, colors,
                                            track_ids=tracks.track_ids, velocities=tracks.velocities,
                                            namespace='tracks'))

    def _publish_semantics(self, camera: str, header, result):
        """The camera's class map (labels), its colours and the overlay on its undistorted image, each
        only when subscribed, written straight into the outgoing messages' buffers (_CameraOutputs)."""
        outputs = self.camera_outputs[camera]
        semantic = result.semantic_maps[camera]
        height, width = semantic.output_hw
        if outputs.labels.get_subscription_count() > 0:
            semantic.labels(out=outputs.labels_buffer.pixels((height, width)))
            outputs.labels.publish(outputs.labels_buffer.message('mono8', header))
        want_color = outputs.color.get_subscription_count() > 0
        want_overlay = outputs.overlay.get_subscription_count() > 0
        if want_color or want_overlay:
            color = semantic.colors(self.inference.semantic_labels,
                                    out=outputs.color_buffer.pixels((height, width, 3)) if want_color else None)
            if want_color:
                outputs.color.publish(outputs.color_buffer.message('rgb8', header))
            if want_overlay:
                blend(result.undistorted_image(camera), color, self.params['overlay_alpha'],
                      out=outputs.overlay_buffer.pixels((height, width, 3)))
                outputs.overlay.publish(outputs.overlay_buffer.message('rgb8', header))

    def _publish_label_info(self):
        header = Detection2DArray().header
        header.frame_id = ''
        header.stamp = self.get_clock().now().to_msg()
        message = label_info(self.inference.semantic_labels, header, threshold=self.params['score_threshold'])
        for outputs in self.camera_outputs.values():
            outputs.label_info.publish(message)

    # ----------------------------------------------------------------------------- diagnostics
    def _skip(self, reason: str, message: str):
        """Count a skipped/degraded input (`skipped.<reason>`) and warn (throttled)."""
        self.pipeline.skip(reason, message)

    def _on_pipeline_event(self, level: str, key: str, message: str):
        """The pipeline's skips, time events and camera changes: logged at most every 5 s per key."""
        with self._lock:
            now = time.monotonic()
            if now - self._last_warning.get(key, -1e9) < 5.0:
                return
            self._last_warning[key] = now
        name = key[len('skipped.'):] if key.startswith('skipped.') else key
        if level == 'info':
            self.get_logger().info(message)
        else:
            self.get_logger().warn(f'{name}: {message}')

    def _publish_diagnostics(self):
        elapsed = max(time.monotonic() - self._started, 1e-6)
        counts = self.pipeline.counts()
        with self._lock:
            latency = self.latency.summary()
        sync_stats = self.pipeline.sync_stats()
        lidar_only = self.pipeline.lidar_only_active
        silent = self.pipeline.silent_cameras
        values = {
            'device': str(self.inference.device),
            'precision': self.inference.precision,
            'backend': self.inference.backend,
            'execution_providers': ' '.join(self.inference.execution_providers),
            'inference_threads': str(self.inference.threads),
            'lidar_only_mode': str(lidar_only),
            'cameras': ' '.join(self.cameras),
            'silent_cameras': ' '.join(silent),
            'tf_backend': self.tf.backend,
            'rate_points_hz': f"{self._received['points'] / elapsed:.2f}",
            'received_points': str(self._received['points']),
        }
        for camera in self.cameras:
            values[f'rate_{camera}_hz'] = f'{self._received[camera] / elapsed:.2f}'
            values[f'received_{camera}'] = str(self._received[camera])
        values.update({k: str(v) for k, v in sorted(counts.items())})
        values.update({k: str(v) for k, v in sorted(self.tf.counts.items())})
        if self.tracker is not None:
            values['tracking.confirmed_tracks'] = str(self.tracker.num_confirmed)
            values['tracking.resets'] = str(self.tracker.resets)
        values.update(_sync_values(sync_stats))
        values.update({f'subscribers.{pub.topic_name}': str(pub.get_subscription_count()) for pub in self._outputs})
        for stage, (p50, p95) in sorted(latency.items()):
            values[f'latency_ms.{stage}.p50'] = f'{p50:.1f}'
            values[f'latency_ms.{stage}.p95'] = f'{p95:.1f}'
        skipped = sum(v for k, v in counts.items() if k.startswith('skipped.'))
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: mtl_perception', hardware_id=str(self.inference.device),
            level=DiagnosticStatus.WARN if (skipped or silent) else DiagnosticStatus.OK,
            message=('LiDAR-only (no camera)' if lidar_only else
                     f"running without silent camera(s) {', '.join(silent)}" if silent else 'running')
            + (f', {skipped} inputs skipped' if skipped else ''),
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)

    def stop(self):
        self._running = False
        self._slot.close()
        self._worker.join(timeout=5.0)


def parameter_descriptor(name: str) -> ParameterDescriptor:
    """The rcl_interfaces descriptor of schema parameter `name` (core.parameters.ros_descriptor)."""
    pieces = ros_descriptor(name)
    descriptor = ParameterDescriptor(name=name, description=pieces.description,
                                     additional_constraints=pieces.additional_constraints,
                                     read_only=pieces.read_only)
    if pieces.floating_point_range is not None:
        low, high = pieces.floating_point_range
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high, step=0.0)]
    if pieces.integer_range is not None:
        low, high = pieces.integer_range
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    return descriptor


def _sync_values(stats: dict) -> dict:
    """Synchronizer counters as diagnostic key/values, per stream by name."""
    names = stats['stream_names']
    values = {'sync.emitted_pairs': str(stats['emitted_sets'])}
    for key in ('received', 'pending'):
        values.update({f'sync.{key}.{name}': str(n) for name, n in zip(names, stats[key])})
    for reason, counts in sorted(stats['dropped'].items()):
        values.update({f'sync.dropped.{reason}.{name}': str(n) for name, n in zip(names, counts)})
    return values


def main(args=None):
    stop = init_ros(args)
    node = None

    def cleanup():
        if node is not None:
            node.stop()
            node.destroy_node()

    # Start-up problems (missing checkpoint, bad parameters) end the process with a message.
    with main_frame('mtl_perception', (StartupError,), cleanup) as outcome:
        node = MtlPerceptionNode()
        spin_until_stopped(node, stop)
    return outcome.code

if __name__ == '__main__':
    raise SystemExit(main())
