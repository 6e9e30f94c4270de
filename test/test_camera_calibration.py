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


def camera_info(**fields) -> SimpleNamespace:
    """The fields of a sensor_msgs/CameraInfo that camera_info_data reads: K, a 320x240 image, no distortion."""
    projection = np.zeros((3, 4))
    projection[:, :3] = K
    values = dict(k=K.ravel().tolist(), d=[], width=320, height=240, distortion_model='', r=np.eye(3).ravel().tolist(),
                  p=projection.ravel().tolist())
    values.update(fields)
    return SimpleNamespace(**values)


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
    info = camera_info_data(camera_info(d=RATIONAL.tolist(), distortion_model='rational_polynomial'))
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
    ('equidistant', 5, 'equidistant needs 4 coefficients'),      # (4 is supported: fisheye test below)
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


def fisheye_distort(u: np.ndarray, v: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undistorted pixel -> where it lies in the fisheye image (OpenCV's equidistant model written out)."""
    x, y = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    r = np.hypot(x, y)
    theta = np.arctan(r)
    theta_d = theta * (1 + d[0] * theta ** 2 + d[1] * theta ** 4 + d[2] * theta ** 6 + d[3] * theta ** 8)
    scale = np.where(r > 0, theta_d / np.where(r > 0, r, 1.0), 1.0)
    return x * scale * K[0, 0] + K[0, 2], y * scale * K[1, 1] + K[1, 2]


def test_equidistant_fisheye_from_camera_info_is_undistorted_like_cv2_fisheye():
    fisheye_d = np.array([0.08, -0.03, 0.01, -0.002])
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    info = camera_info_data(camera_info(d=fisheye_d.tolist(), distortion_model='equidistant'))
    calibration = base.with_intrinsics(info.camera_matrix, info.distortion, info.distortion_model, info.image_size_wh)
    assert calibration.distortion_model == 'equidistant'
    np.testing.assert_array_equal(calibration.distortion, fisheye_d)
    sampled = source_pixels(calibration)
    rows, cols = np.mgrid[0:SIZE_WH[1], 0:SIZE_WH[0]].astype(np.float64)
    expected_u, expected_v = fisheye_distort(cols, rows, fisheye_d)
    # the equidistant projection itself pulls the corners in by tens of pixels: a pinhole remap cannot pass
    assert np.hypot(expected_u - cols, expected_v - rows).max() > 20
    error = np.hypot(sampled[..., 0] - expected_u, sampled[..., 1] - expected_v)
    assert error.max() < 0.1          # fixed-point remap tables: 1/32 pixel steps
    back = cv2.fisheye.undistortPoints(sampled.reshape(-1, 1, 2).astype(np.float64), K, fisheye_d, P=K)
    np.testing.assert_allclose(back.reshape(-1, 2), np.stack([cols, rows], -1).reshape(-1, 2), atol=0.1)
    # the same coefficients hold at half the resolution, with K scaled
    half, half_k = calibration.prepare_image(np.zeros((120, 160, 3), np.uint8))
    assert half.shape == (120, 160, 3) and half_k[0, 0] == pytest.approx(100.0)


@pytest.mark.parametrize('bad_k, message', [
    ([[200.0, 0, np.nan], [0, 200, 119.5], [0, 0, 1]], r'K \(camera matrix\) must be finite numbers, got .*nan'),
    ([[np.inf, 0, 159.5], [0, 200, 119.5], [0, 0, 1]], r'K \(camera matrix\) must be finite numbers, got .*inf'),
    ([[0.0, 0, 159.5], [0, 200, 119.5], [0, 0, 1]], r'K \(camera matrix\) must have fx, fy > 0, got fx = 0, fy = 200'),
    ([[200.0, 0, 159.5], [0, -200, 119.5], [0, 0, 1]], r'fx, fy > 0, got fx = 200, fy = -200'),
    ([[200.0, 0, 159.5], [0, 200, 119.5], [0, 0, 2]], r'last row 0 0 1, got \[0.0, 0.0, 2.0\]'),
])
def test_camera_info_k_that_cannot_be_a_camera_is_refused(bad_k, message):
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    info = camera_info_data(camera_info(k=np.ravel(bad_k).tolist()))
    with pytest.raises(CalibrationError, match=message):
        base.with_intrinsics(info.camera_matrix, info.distortion, info.distortion_model, info.image_size_wh)
    with pytest.raises(CalibrationError, match=message.replace(r'K \(camera matrix\)', 'camera_matrix')):
        CameraCalibration.from_parameters(OPTICAL, np.ravel(bad_k), [], SIZE_WH)


@pytest.mark.parametrize('d, message', [
    ([0.1, np.inf, 0, 0, 0], r'distortion \(D\) must be finite numbers, got \[0.1, inf'),
    ([np.nan] * 8, r'distortion \(D\) must be finite'),
])
def test_camera_info_non_finite_d_is_refused_before_it_blackens_the_image(d, message):
    base = CameraCalibration.from_parameters(OPTICAL, K.ravel(), [], SIZE_WH)
    model = 'plumb_bob' if len(d) == 5 else 'rational_polynomial'
    with pytest.raises(CalibrationError, match=message):
        base.with_intrinsics(K, d, model, SIZE_WH)


@pytest.mark.parametrize('name, values, message', [
    ('p', [np.nan] * 12, r'CameraInfo.p must be 12 finite numbers \(3x4 row-major; all zeros when unset\), got \[nan'),
    ('p', [0.0] * 9, 'CameraInfo.p must be 12 finite numbers'),
    ('r', [1.0, 0, 0, 0, np.inf, 0, 0, 0, 1], r'CameraInfo.r must be 9 finite numbers \(3x3 row-major\), got .*inf'),
])
def test_camera_info_with_a_broken_r_or_p_is_refused(name, values, message):
    with pytest.raises(ConversionError, match=message):
        camera_info_data(camera_info(**{name: values}))
    assert camera_info_data(camera_info(p=[0.0] * 12)).image_hw == (240, 320)   # an unset (zero) P is fine


@pytest.mark.parametrize('shape', [(0, 320, 3), (240, 0, 3), (0, 0, 3)])
def test_an_empty_image_is_a_calibration_error_not_a_crash(shape):
    for distortion in ([], RATIONAL.tolist()):
        calibration = CameraCalibration.from_parameters(OPTICAL, K.ravel(), distortion, SIZE_WH)
        with pytest.raises(CalibrationError, match=rf'image is {shape[1]}x{shape[0]}: width and height must be > 0'):
            calibration.prepare_image(np.zeros(shape, np.uint8))
