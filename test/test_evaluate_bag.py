"""training.evaluation.evaluate_bag: offline evaluation over a bag (the node's code path without ROS), scoring
by stamp, and agreement with the outputs of the real node replaying the same bag over DDS."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mtl_perception_ros.core.inference import PerceptionInference
from mtl_perception_ros.core.labels import LabelSet
from ros_test_utils import console_script, start_node_and_recorder, wait_for_recorder
from sensor_samples import make_small_checkpoint, write_params_yaml
from training.data.chunks import ChunkReader
from training.evaluation.evaluate_bag import (BagPredictions, FramePrediction, GroundTruth, bev_to_boxes, load_node_params,
                                              main, predict_offline, read_ground_truth, read_recorded, score)
from training.export.to_bag import export_bag
from training.data.toy_chunks import toy_camera, write_toy_chunks

REPO = Path(__file__).resolve().parent.parent
FRAMES = 4
IMAGE_HW = (64, 96)          # the small checkpoint's input size: no resize in the model


@pytest.fixture(scope='module')
def toy_bag(tmp_path_factory):
    """(bag, checkpoint, params YAML): 4 toy frames, a tiny network, the node YAML with the toy camera."""
    root = tmp_path_factory.mktemp('evaluate_bag')
    write_toy_chunks(root / 'chunks', scenes=2, frames=FRAMES, val_scenes=1, seed=3, image_hw=IMAGE_HW)
    export_bag(root / 'chunks', root / 'bag', split='val', log=lambda *a: None)
    checkpoint = make_small_checkpoint(root / 'small.pt')
    document = yaml.safe_load((REPO / 'config/mtl_perception.yaml').read_text())
    params = document['/**']['ros__parameters']
    camera_matrix, vehicle_to_camera = toy_camera(IMAGE_HW)
    params.update(model_path=str(checkpoint), input_qos='reliable', warmup_iterations=1)
    params['camera'].update(camera_matrix=camera_matrix.ravel().tolist(),
                            lidar_to_camera=vehicle_to_camera.ravel().tolist(),
                            calibration_image_size=[IMAGE_HW[1], IMAGE_HW[0]])
    write_params_yaml(root / 'params.yaml', document)
    return root / 'bag', checkpoint, root / 'params.yaml', root / 'chunks'


def labels():
    return (LabelSet.from_yaml(REPO / 'config/a2d2/box_classes.yaml'),
            LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml'))


# ----------------------------------------------------------------------------- pure parts
def test_params_yaml_in_the_node_format_is_read_over_the_node_defaults(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    slop_s: 0.02\n    score_threshold: 0.5\n')
    params = load_node_params(path)
    assert params['slop_s'] == 0.02 and params['score_threshold'] == 0.5
    assert params['queue_size'] == 10 and params['points_min_interval_s'] == 0.05     # node defaults
    assert load_node_params(REPO / 'config/mtl_perception.yaml')['camera.calibration_image_size'] == [1920, 1208]
    path.write_text('slop_s: 0.02\n')
    with pytest.raises(ValueError, match='ros__parameters'):
        load_node_params(path)


def test_bev_message_boxes_become_seven_column_boxes():
    boxes = bev_to_boxes(np.array([[10.0, -2.0, 4.0, 1.8, 0.5]]))
    np.testing.assert_array_equal(boxes, [[10.0, -2.0, 0.0, 4.0, 1.8, 1.0, 0.5]])


def test_scoring_matches_by_stamp_and_counts_frames_without_output():
    """Two GT frames with one car each; a prediction only for the first, on its car: recall 1/2 at
    precision 1 -> AP = 40/90 (nuScenes' calc_ap: grid points 0.11..0.5 of 0.11..1.0 at precision 1).
    Segmentation: a 2x2 map with one of three counted pixels wrong, one ignored."""
    detection_labels, semantic_labels = labels()
    car = np.array([[10.0, 0.0, 0.0, 4.0, 1.8, 1.5, 0.0]])
    truth = GroundTruth(detections={100: (car, np.array([0])), 200: (car + [5, 0, 0, 0, 0, 0, 0], np.array([0]))},
                        semantic={(None, 150): np.array([[0, 0], [1, 255]], np.uint8)})
    predicted_map = np.array([[0, 0], [0, 3]], np.uint8)
    predictions = BagPredictions(source='hand-made', frames=[
        FramePrediction(100, 150, car + [0.2, 0, 0, 0, 0, 0, 0], np.array([0]), np.array([0.9]),
                        predicted_map, class_maps={(None, 150): predicted_map}),
        FramePrediction(999, None, car, np.array([0]), np.array([0.8]), None)])     # no GT frame: not scored
    evaluation = score(predictions, truth, detection_labels, semantic_labels)
    np.testing.assert_allclose(evaluation.detection.ap[0], 40 / 90)
    assert np.isnan(evaluation.detection.ap[1]).all()                    # no truck in the GT
    assert evaluation.detection.map == pytest.approx(40 / 90)
    assert evaluation.counts['gt_frames_without_prediction'] == 1
    assert evaluation.counts['predictions_without_gt'] == 1
    seg = evaluation.segmentation
    assert seg['pixel_accuracy'] == pytest.approx(2 / 3)
    assert seg['iou'][0] == pytest.approx(2 / 3) and seg['iou'][1] == 0.0     # road 2/(2+1), lane_marking 0/1
    assert seg['miou'] == pytest.approx(1 / 3)


def test_offline_runs_every_pair_exactly_as_the_inference_core_on_the_frames(toy_bag):
    """Each bag pair gives what PerceptionInference gives on the chunk's own frame with its calibration
    (intensities go through the bag as x 255 and back: float rounding only)."""
    bag, checkpoint, params_path, chunks = toy_bag
    params = load_node_params(params_path)
    inference = PerceptionInference(checkpoint, device='cpu', score_threshold=params['score_threshold'])
    predictions = predict_offline(bag, inference, params)
    assert len(predictions.frames) == FRAMES
    assert predictions.counts['sync.emitted_pairs'] == FRAMES and predictions.counts['processed'] == FRAMES
    assert set(predictions.latency_summary) >= {'model.model', 'total'}
    reader = ChunkReader(sorted(chunks.glob('val_*.npz'))[0])
    for frame_prediction, index in zip(predictions.frames, range(len(reader))):
        frame = reader.frame(index)
        expected = inference(frame.points, frame.image, frame.camera_matrix, frame.vehicle_to_camera)
        np.testing.assert_allclose(frame_prediction.boxes, expected.boxes, atol=1e-4)
        np.testing.assert_array_equal(frame_prediction.classes, expected.classes)
        np.testing.assert_allclose(frame_prediction.scores, expected.scores, atol=1e-5)
        assert frame_prediction.class_map.shape == IMAGE_HW
        assert (frame_prediction.class_map != expected.class_map).mean() < 0.01
    # The camera calibration from the bag (/camera_info + /tf_static) is the same toy camera.
    # The extrinsics come from /tf_static (vehicle -> camera_front) through the TF buffer: the YAML's
    # lidar_to_camera may be absent.
    assert predictions.counts['extrinsics.parameter.camera'] == FRAMES
    without_transform = {**params, 'camera.lidar_to_camera': None}
    from_bag = predict_offline(bag, inference, without_transform, calibration_source='bag')
    assert from_bag.counts['extrinsics.tf.camera'] == FRAMES and 'extrinsics.parameter.camera' not in from_bag.counts
    for a, b in zip(predictions.frames, from_bag.frames):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-4)
    # Without /tf_static and without the parameter the camera is left out, counted.
    no_extrinsics = predict_offline(bag, inference, without_transform, calibration_source='camera_info')
    assert no_extrinsics.counts['skipped.no_extrinsics.camera'] == FRAMES
    assert no_extrinsics.counts['processed_lidar_only'] == FRAMES


def test_offline_evaluation_reads_a_compressed_bag(toy_bag, tmp_path):
    """A bag recorded with compressed images: every pair is paired and fused as with raw images."""
    _, checkpoint, params_path, chunks = toy_bag
    export_bag(chunks, tmp_path / 'jpeg_bag', split='val', log=lambda *a: None, compressed=True)
    params = load_node_params(params_path)
    predictions = predict_offline(tmp_path / 'jpeg_bag', PerceptionInference(checkpoint, device='cpu'), params)
    assert predictions.counts['processed'] == FRAMES and 'processed_lidar_only' not in predictions.counts
    assert predictions.counts['received.camera/image_raw/compressed'] == FRAMES
    assert all(f.class_map is not None and f.class_map.shape == IMAGE_HW for f in predictions.frames)


def test_cli_writes_the_report(toy_bag, tmp_path):
    bag, checkpoint, params_path, _ = toy_bag
    out = tmp_path / 'report'
    assert main(['--bag', str(bag), '--checkpoint', str(checkpoint), '--params', str(params_path),
                 '--out', str(out), '--samples', '2']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['counts']['gt_frames'] == FRAMES and metrics['counts']['class_maps_scored'] == FRAMES
    text = (out / 'report.md').read_text()
    assert '**mAP' in text and '**mIoU' in text and 'sync.emitted_pairs' in text and 'model.model' in text
    for name in ('confusion_matrix.png', 'latency.png', 'pr_car.png', 'sample_0.png', 'sample_1.png'):
        assert (out / name).stat().st_size > 1000, name
    with pytest.raises(SystemExit):
        main(['--bag', str(bag), '--out', str(out)])              # neither --checkpoint nor --recorded


# ----------------------------------------------------------------------------- live replay through the node
@pytest.mark.ros
def test_recorded_node_outputs_score_like_the_offline_evaluation(toy_bag, tmp_path, rclpy_context, ros_process):
    from sensor_msgs.msg import Image
    from vision_msgs.msg import Detection2DArray

    bag, checkpoint, params_path, _ = toy_bag
    watcher = rclpy_context.create_node('evaluate_bag_watcher')
    detections = []
    watcher.create_subscription(Detection2DArray, '/mtl_perception/detections', detections.append, 50)
    watcher.create_subscription(Image, '/mtl_perception/camera/semantic/labels', lambda m: None, 50)
    # the recorder (and this watcher) subscribe to the outputs before anything plays
    recorded = tmp_path / 'recorded'
    node, recorder = start_node_and_recorder(rclpy_context, ros_process, params_path, recorded, subscribers=2,
                                             answers=FRAMES)
    player = ros_process(console_script('mtl_bag_play', 'mtl_perception_ros.ros.bag_play') + [
        str(bag), '--rate', '0.25', '--qos', 'reliable', '--wait-for-subscribers', '20',
        '--topics', '/points', '/camera/image_raw'], name='player')
    # 0.4 s between pairs: the worker finishes each before the next even on a loaded CI machine
    # (a busy drop would leave a frame without live output and fail the comparison below)
    try:
        rclpy_context.spin_until(lambda: len(detections) >= FRAMES and player.poll() is not None, 60,
                                 f'{FRAMES} detection messages')
    except AssertionError as error:
        raise AssertionError(f'{error}; got {len(detections)}\nnode:\n{node.output()[-4000:]}\n'
                             f'player:\n{player.output()[-2000:]}') from None
    assert player.popen.wait(timeout=10) == 0, player.output()
    wait_for_recorder(recorder, node)                 # every answer and one more /diagnostics
    assert node.interrupt() == 0, node.output()

    params = load_node_params(params_path)
    detection_labels, semantic_labels = labels()
    inference = PerceptionInference(checkpoint, device='cpu', score_threshold=params['score_threshold'])
    offline = predict_offline(bag, inference, params)
    live = read_recorded(recorded, detection_labels.names)
    assert len(live.frames) == len(offline.frames) == FRAMES, live.counts
    assert sum(len(f.boxes) for f in offline.frames) > 0          # the comparison below is not vacuous
    for a, b in zip(sorted(offline.frames, key=lambda f: f.cloud_stamp_ns),
                    sorted(live.frames, key=lambda f: f.cloud_stamp_ns)):
        assert a.cloud_stamp_ns == b.cloud_stamp_ns
        np.testing.assert_allclose(b.boxes[:, [0, 1, 3, 4, 6]], a.boxes[:, [0, 1, 3, 4, 6]], atol=1e-5)
        np.testing.assert_array_equal(b.classes, a.classes)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-6)
        np.testing.assert_array_equal(live.class_maps[(None, a.image_stamp_ns)], a.class_map)
    assert live.latency_summary and live.counts.get('node.processed') == str(FRAMES)

    truth = read_ground_truth(bag, detection_labels.names, inference.grid)
    offline_eval = score(offline, truth, detection_labels, semantic_labels)
    live_eval = score(live, truth, detection_labels, semantic_labels)
    np.testing.assert_allclose(live_eval.detection.ap, offline_eval.detection.ap, equal_nan=True)
    np.testing.assert_array_equal(live_eval.segmentation['confusion_matrix'],
                                  offline_eval.segmentation['confusion_matrix'])
    # and the CLI's recorded mode writes the report from the same numbers
    out = tmp_path / 'report'
    assert main(['--bag', str(bag), '--recorded', str(recorded), '--params', str(params_path), '--out', str(out),
                 '--samples', '1']) == 0
    metrics = json.loads((out / 'metrics.json').read_text())
    assert metrics['segmentation']['miou'] == pytest.approx(offline_eval.segmentation['miou'])
    assert (out / 'sample_0.png').is_file() and 'node.processed' in (out / 'report.md').read_text()


def test_recorded_mode_keeps_ground_truth_inside_the_checkpoints_grid_not_a_default_one(tmp_path):
    """Toy objects up to 90 m ahead, a checkpoint whose grid reaches 96 m, and a "recording" whose
    detections are the ground truth itself: every GT box counts and is found (mAP 1)."""
    from mtl_perception_ros.bags.reader import BagReader
    from mtl_perception_ros.bags.topics import DETECTION2D_ARRAY, GT_DETECTIONS_TOPIC
    from mtl_perception_ros.bags.writer import BagWriter
    from mtl_perception_ros.core.bev_grid import BevGrid

    write_toy_chunks(tmp_path / 'chunks', scenes=2, frames=FRAMES, val_scenes=1, seed=5, image_hw=IMAGE_HW,
                     extent_m=90.0)
    export_bag(tmp_path / 'chunks', tmp_path / 'bag', split='val', log=lambda *a: None)
    grid = BevGrid(x_min_m=0, x_max_m=96, y_min_m=-48, y_max_m=48, cell_m=1.0)
    checkpoint = make_small_checkpoint(tmp_path / 'wide.pt', bev_grid=grid)
    with BagReader(tmp_path / 'bag') as reader, BagWriter(tmp_path / 'recorded') as writer:
        writer.add_topic('/mtl_perception/detections', DETECTION2D_ARRAY)
        for _, msgtype, timestamp_ns, data in reader.raw([GT_DETECTIONS_TOPIC]):
            writer.write_raw('/mtl_perception/detections', msgtype, data, timestamp_ns)
    default = BevGrid()
    truth = read_ground_truth(tmp_path / 'bag', labels()[0].names, default)
    assert truth.outside_grid > 0                # the case at hand: boxes beyond the default grid
    params = tmp_path / 'params.yaml'
    params.write_text(f'/**:\n  ros__parameters:\n    model_path: "{checkpoint}"\n')
    for grid_from in (['--params', str(params)], ['--checkpoint', str(checkpoint)]):
        out = tmp_path / f'report_{grid_from[0].strip("-")}'
        assert main(['--bag', str(tmp_path / 'bag'), '--recorded', str(tmp_path / 'recorded'), *grid_from,
                     '--out', str(out), '--samples', '0']) == 0
        metrics = json.loads((out / 'metrics.json').read_text())
        assert metrics['counts']['gt_boxes_outside_grid'] == 0, grid_from
        assert metrics['detection']['map'] == pytest.approx(1.0), grid_from
    # without a checkpoint to take the grid from, recorded mode says what it needs
    assert main(['--bag', str(tmp_path / 'bag'), '--recorded', str(tmp_path / 'recorded'),
                 '--out', str(tmp_path / 'report_none'), '--samples', '0']) == 2
