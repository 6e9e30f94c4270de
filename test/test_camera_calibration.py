"""The node's camera calibration: distortion models and coefficient counts, and CameraInfo reading."""
from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from mtl_perception_ros.core.camera_calibration import CalibrationError, CameraCalibration
from mtl_perception_ros.messages.camera_info import camera_info_data
from mtl_perception_ros.messages.conversion_errors import ConversionError

OPTICAL = [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
K = np.array([[200.0, 0.0, 159.5], [0.0, 200.0, 119.5], [0.0, 0.0, 1.0]])
SIZE_WH = (320, 240)
# k1 k2 p1 p2 k3 k4 k5 k6: k4..k6 move a pixel near the corner by several pixels
RATIONAL = np.array([-0.25, 0.08, 0.001, -0.002, 0.01, 0.3, -0.05, 0.02])


def distort(u: np.ndarray, v: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted pixel -> where it lies in the distorted image (the rational model written out)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    r2 = x * x + y * y
    radial = (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd * K[0, 0] + K[0, 2], yd * K[1, 1] + K[1, 2]


def source_pixels(calibration: CameraCalibration) -> np.ndarray:
    """(H, W, 2): for each pixel of the undistorted image, the distorted-image pixel it was taken from
    (the input image holds its own pixel coordinates, so remapping returns the sampling positions)."""
    rows, cols = np.mgrid[0:SIZE_WH[1], 0:SIZE_WH[0]].astype(np.float32)
    image = np.stack([cols, rows, np.zeros_like(rows)], -1)
    undistorted, _ = calibration.prepare_image(image)
    return undistorted[..., :2]


def test_rational_polynomial_undistortion_uses_all_eight_coefficients():
    calibration = CameraCalibration.from_parameters(OPTICAL, K.ravel(), RATIONAL.tolist(), SIZE_WH)
    np.testing.assert_array_equal(calibration.distortion, RATIONAL)
    sampled = source_pixels(calibration)
    rows, cols = np.mgrid[0:SIZE_WH[1], 0:SIZE_WH[0]].astype(np.float64)
    expected_u, expected_v = distort(cols, rows, RATIONAL)
    inside = (expected_u > 1) & (expected_u < SIZE_WH[0] - 2) & (expected_v > 1) & (expected_v < SIZE_WH[1] - 2)
    assert inside.mean() > 0.8
    # the 5-coefficient model is far off here, so a truncated D cannot pass the check below
    plumb_u, plumb_v = distort(cols, rows, np.r_[RATIONAL[:5], 0.0, 0.0, 0.0])
    assert np.hypot(plumb_u - expected_u, plumb_v - expected_v)[inside].max() > 5.0
    error = np.hypot(sampled[..., 0] - expected_u, sampled[..., 1] - expected_v)[inside]
    assert error.max() < 0.1          # fixed-point remap tables: 1/32 pixel steps
    # and OpenCV's own inverse model maps the sampling positions back onto the pixel grid
    points = sampled[inside].reshape(-1, 1, 2).astype(np.float64)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    if hasattr(cv2, 'undistortPointsIter'):      # OpenCV 4; 5 takes the criteria in undistortPoints
        back = cv2.undistortPointsIter(points, K, RATIONAL, None, K, criteria)
    else:
        back = cv2.undistortPoints(points, K, RATIONAL, R=None, P=K, criteria=criteria)
    back = back.reshape(-1, 2)
    grid = np.stack([cols[inside], rows[inside]], -1)
    assert np.abs(back - grid).max() < 0.1


def test_camera_info_with_rational_polynomial_keeps_k4_to_k6():
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    info = camera_info_data(SimpleNamespace(k=K.ravel().tolist(), d=RATIONAL.tolist(), width=320, height=240,
                                            distortion_model='rational_polynomial'))
    assert info.image_size_wh == SIZE_WH and info.image_hw == (240, 320)
    updated = base.with_intrinsics(info.camera_matrix, info.distortion, info.distortion_model, info.image_size_wh)
    np.testing.assert_array_equal(updated.distortion, RATIONAL)
    reference = CameraCalibration.from_parameters(OPTICAL, K.ravel(), RATIONAL, SIZE_WH)
    np.testing.assert_array_equal(source_pixels(updated), source_pixels(reference))


def test_no_distortion_leaves_the_image_alone():
    image = np.zeros((240, 320, 3), np.uint8)
    for distortion in ([], [0.0] * 5, [0.0] * 8):
        calibration = CameraCalibration.from_parameters(OPTICAL, K.ravel(), distortion, SIZE_WH)
        assert calibration.prepare_image(image)[0] is image
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    for model, d in (('', []), ('', [0.0] * 5), ('plumb_bob', [0.0] * 5), ('equidistant', [0.0] * 4)):
        assert base.with_intrinsics(K, d, model, SIZE_WH).prepare_image(image)[0] is image


@pytest.mark.parametrize('count', [1, 4, 6, 12, 14])
def test_a_distortion_parameter_of_another_length_is_refused(count):
    with pytest.raises(CalibrationError, match=rf'distortion needs 0, 5 .* or 8 .* numbers, got {count}'):
        CameraCalibration.from_parameters(OPTICAL, K.ravel(), [0.01] * count, SIZE_WH)


@pytest.mark.parametrize('model, count, message', [
    ('plumb_bob', 8, 'plumb_bob needs 5 coefficients'),
    ('plumb_bob', 4, 'plumb_bob needs 5 coefficients'),
    ('rational_polynomial', 5, 'rational_polynomial needs 8 coefficients'),
    ('rational_polynomial', 14, 'rational_polynomial needs 8 coefficients'),
    ('equidistant', 4, 'equidistant .*fisheye.* not supported'),
    ('', 5, "distortion model '' .*not supported"),
    ('thin_prism', 12, "distortion model 'thin_prism' .*not supported"),
])
def test_camera_info_distortion_of_another_model_or_length_is_refused(model, count, message):
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    with pytest.raises(CalibrationError, match=message):
        base.with_intrinsics(K, [0.01] * count, model, SIZE_WH)


def test_camera_info_of_size_zero_or_non_finite_distortion_is_refused():
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    with pytest.raises(CalibrationError, match='width, height'):
        base.with_intrinsics(K, [], '', (0, 240))
    with pytest.raises(CalibrationError, match='finite'):
        base.with_intrinsics(K, [np.nan, 0, 0, 0, 0], 'plumb_bob', SIZE_WH)


def test_camera_info_reading_names_a_k_of_the_wrong_size():
    with pytest.raises(ConversionError, match='CameraInfo.k has 4 numbers, expected 9'):
        camera_info_data(SimpleNamespace(k=[1.0] * 4, d=[], width=320, height=240, distortion_model=''))
