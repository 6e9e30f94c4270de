"""The ROS-free inference core and the node's calibration handling, without DDS."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.camera_calibration import CalibrationError, CameraCalibration
from mtl_perception_ros.core.checkpoint import CheckpointError
from mtl_perception_ros.core.inference import PerceptionInference, pick_device
from mtl_perception_ros.messages.camera_info import camera_info_data
from sensor_samples import IMAGE_HW, make_small_checkpoint, synthetic_cloud, synthetic_image

A2D2_K = [1687.33691, 0.0, 965.434141, 0.0, 1783.42847, 684.41936, 0.0, 0.0, 1.0]
OPTICAL = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.fixture(scope='module')
def inference(tmp_path_factory):
    checkpoint = make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')
    return PerceptionInference(checkpoint, device='auto', score_threshold=0.3)


def test_auto_device_is_cpu_without_cuda_and_cuda_request_is_refused_clearly():
    import torch
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    assert pick_device('auto').type == 'cpu'
    with pytest.raises(ValueError, match='CUDA is not available'):
        pick_device('cuda')


def test_boxes_and_a_class_map_at_the_input_image_size(inference):
    rng = np.random.default_rng(0)
    points = synthetic_cloud(rng)
    points[:, 3] /= 255.0
    image = synthetic_image(rng)
    k = np.array(A2D2_K).reshape(3, 3) / 8.0
    k[2, 2] = 1.0
    result = inference(points, image, k, np.array(OPTICAL).reshape(4, 4))
    assert not result.lidar_only
    assert result.class_map.shape == IMAGE_HW and result.class_map.dtype == np.uint8
    assert result.class_map.max() < len(inference.semantic_labels)
    assert result.boxes.shape[1] == 7 and len(result.boxes) == len(result.scores) == len(result.classes) > 0
    assert (result.scores >= 0.3).all()
    assert set(result.timings_ms) == {'preprocess', 'model', 'postprocess'}
    # the same input gives the same output (eval mode, no dropout)
    again = inference(points, image, k, np.array(OPTICAL).reshape(4, 4))
    np.testing.assert_array_equal(again.boxes, result.boxes)


def test_without_an_image_it_runs_lidar_only_and_says_so(inference):
    points = synthetic_cloud(np.random.default_rng(1))
    result = inference(points, None, None, None)
    assert result.lidar_only and result.class_map is None
    assert result.boxes.shape[1] == 7


@pytest.mark.parametrize('image_hw', [IMAGE_HW, (40, 60), (50, 160)], ids=['shrink', 'enlarge', 'mixed'])
def test_inference_gives_the_model_the_pixels_and_camera_matrix_of_a_training_sample(inference, image_hw):
    """No train/serve skew: on its device, inference resizes as training.data.dataset does."""
    from training.data.dataset import DatasetConfig, prepare_sample
    from training.data.frame import Frame

    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, image_hw + (3,), dtype=np.uint8)   # noise: any two resizes differ
    k = np.array([[image_hw[1] * 0.9, 0, image_hw[1] / 2], [0, image_hw[1] * 0.9, image_hw[0] / 2], [0, 0, 1]])
    frame = Frame(name='s/0', scene='s', points=synthetic_cloud(rng)[:, :4] / [1, 1, 1, 255], image=image,
                  class_map=None, boxes=np.zeros((0, 7), np.float32), box_classes=np.zeros(0, np.int64),
                  track_ids=np.zeros(0, np.int64), camera_matrix=k, vehicle_to_camera=np.array(OPTICAL).reshape(4, 4))
    sample = prepare_sample(frame, DatasetConfig(grid=inference.grid, input_hw=inference.info.image_hw))
    image_t, k_model = inference.model_image(image, k)
    assert image_t.device.type == inference.device.type and image_t.shape == (1, 3) + tuple(inference.info.image_hw)
    np.testing.assert_array_equal(image_t[0].cpu().numpy(), sample['image'][0].numpy().astype(np.float32))
    np.testing.assert_allclose(k_model, sample['camera_matrix'][0].numpy(), rtol=1e-6)


def test_a_missing_checkpoint_is_named_in_the_error(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / 'absent.pt')):
        PerceptionInference(tmp_path / 'absent.pt', device='cpu')


def test_calibration_rejects_values_that_cannot_be_a_calibration():
    with pytest.raises(CalibrationError, match='16 numbers'):
        CameraCalibration.from_parameters([1.0] * 12, A2D2_K, [0.0] * 5, [1920, 1208])
    mirrored = list(OPTICAL)
    mirrored[0] = 1.0   # not a rotation any more
    with pytest.raises(CalibrationError, match='rigid'):
        CameraCalibration.from_parameters(mirrored, A2D2_K, [0.0] * 5, [1920, 1208])
    with pytest.raises(CalibrationError, match='fx, fy > 0'):
        CameraCalibration.from_parameters(OPTICAL, [0.0] * 9, [0.0] * 5, [1920, 1208])


def test_images_of_the_same_aspect_are_scaled_and_other_aspects_refused():
    calibration = CameraCalibration.from_parameters(OPTICAL, A2D2_K, [0.0] * 5, [1920, 1208])
    image = np.zeros((604, 960, 3), np.uint8)
    same, k = calibration.prepare_image(image)
    assert same is image
    assert k[0, 0] == pytest.approx(A2D2_K[0] / 2) and k[0, 2] == pytest.approx((A2D2_K[2] + 0.5) / 2 - 0.5)
    with pytest.raises(CalibrationError, match='100x100'):
        calibration.prepare_image(np.zeros((100, 100, 3), np.uint8))


def test_a_distorted_image_is_undistorted_with_the_given_coefficients():
    k = np.array([[200.0, 0, 160], [0, 200.0, 120], [0, 0, 1]])
    distortion = [-0.3, 0.05, 0.0, 0.0, 0.0]
    calibration = CameraCalibration.from_parameters(OPTICAL, k.ravel(), distortion, [320, 240])
    rows, cols = np.mgrid[0:240, 0:320]
    image = np.stack([cols * 255 // 319, rows * 255 // 239, (cols + rows) * 255 // 558], -1).astype(np.uint8)
    undistorted, k_out = calibration.prepare_image(image)
    np.testing.assert_array_equal(k_out, k)
    expected = cv2.undistort(image, k, np.array(distortion))
    inner = (slice(20, -20), slice(20, -20))
    assert np.abs(undistorted.astype(int) - image.astype(int))[inner].max() > 10     # it did remap
    assert np.abs(undistorted.astype(int) - expected.astype(int))[inner].max() <= 2   # like OpenCV's


def test_camera_info_replaces_matrix_distortion_and_size():
    CameraInfo = pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message packages').CameraInfo
    calibration = CameraCalibration.from_parameters(OPTICAL, A2D2_K, [0.0] * 5, [1920, 1208])
    info = CameraInfo(width=640, height=480, distortion_model='plumb_bob', d=[0.1, 0.0, 0.0, 0.0, 0.0],
                      k=[500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0])
    data = camera_info_data(info)
    updated = calibration.with_intrinsics(data.camera_matrix, data.distortion, data.distortion_model,
                                          data.image_size_wh)
    assert updated.image_size_wh == (640, 480) and updated.distortion[0] == pytest.approx(0.1)
    np.testing.assert_array_equal(updated.lidar_to_camera, calibration.lidar_to_camera)
    data = camera_info_data(info)
    assert updated.with_intrinsics(data.camera_matrix, data.distortion, data.distortion_model,
                                   data.image_size_wh) is updated   # unchanged info: no rebuild of remap tables
