"""Camera encodings drivers publish to save bandwidth (Bayer mosaics, YUV 4:2:2, NV12) and
CompressedImage JPEG/PNG, each read back as RGB and checked against a reference written here in
plain numpy (not OpenCV, which the conversions use)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from ros_test_utils import require_modules

require_modules('sensor_msgs.msg', 'std_msgs.msg')    # the messages only: no rclpy needed
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from mtl_perception_ros.messages.camera_image import camera_image_to_rgb  # noqa: E402
from mtl_perception_ros.messages.compressed_image import (compressed_image_to_rgb,  # noqa: E402
                                                          rgb_to_compressed_image)
from mtl_perception_ros.messages.image import RGB_SOURCE_ENCODINGS, ConversionError, image_to_rgb  # noqa: E402

HEIGHT, WIDTH = 24, 32
# ROS pattern -> colour (0 R, 1 G, 2 B) of the 2x2 cell's pixels (0, 0), (0, 1), (1, 0), (1, 1)
PATTERNS = {'rggb': (0, 1, 1, 2), 'bggr': (2, 1, 1, 0), 'gbrg': (1, 2, 0, 1), 'grbg': (1, 0, 2, 1)}


def smooth_rgb() -> np.ndarray:
    """A linear colour gradient: bilinear demosaicing reproduces it exactly away from the border."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return np.stack([40 + 4 * cols, 200 - 3 * rows, 30 + 2 * cols + 2 * rows], axis=-1).round().astype(np.uint8)


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """The (H, W) Bayer mosaic a sensor with `pattern` records of `rgb`."""
    out = np.empty(rgb.shape[:2], rgb.dtype)
    for index, (dr, dc) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dr::2, dc::2] = rgb[dr::2, dc::2, PATTERNS[pattern][index]]
    return out


def message(encoding: str, pixels: np.ndarray, height: int, width: int, is_bigendian: bool = False) -> Image:
    data = np.ascontiguousarray(pixels)
    step = data.reshape(data.shape[0], -1).shape[1] * data.dtype.itemsize
    return Image(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step,
                 data=data.tobytes())


def bt601_limited(y, u, v) -> np.ndarray:
    """YUV (BT.601, video range 16..235 / 16..240) -> RGB, the textbook formulas."""
    y, u, v = (np.asarray(a, np.float64) for a in (y, u, v))
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    rgb = np.stack([c + 1.596 * e, c - 0.392 * d - 0.813 * e, c + 2.017 * d], axis=-1)
    return np.clip(rgb.round(), 0, 255).astype(np.uint8)


def yuv_planes(seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(16, 236, (HEIGHT, WIDTH)).astype(np.uint8)
    u = rng.integers(16, 241, (HEIGHT, WIDTH // 2)).astype(np.uint8)
    v = rng.integers(16, 241, (HEIGHT, WIDTH // 2)).astype(np.uint8)
    return y, u, v


@pytest.mark.parametrize('pattern', sorted(PATTERNS))
def test_bayer_mosaics_demosaic_to_the_scene(pattern):
    rgb = smooth_rgb()
    got = image_to_rgb(message(f'bayer_{pattern}8', mosaic(rgb, pattern), HEIGHT, WIDTH))
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(got[inner].astype(int) - rgb[inner]).max() <= 2
    flat = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + np.array([200, 90, 20], np.uint8)
    np.testing.assert_array_equal(image_to_rgb(message(f'bayer_{pattern}8', mosaic(flat, pattern), HEIGHT, WIDTH)),
                                  flat)


@pytest.mark.parametrize('pattern', sorted(PATTERNS))
@pytest.mark.parametrize('is_bigendian', [False, True])
def test_16_bit_bayer_keeps_the_top_byte_in_the_message_byte_order(pattern, is_bigendian):
    flat = np.zeros((HEIGHT, WIDTH, 3), np.uint8) + np.array([200, 90, 20], np.uint8)
    raw = (mosaic(flat, pattern).astype(np.uint16) << 8) | 0x7F
    raw = raw.astype('>u2' if is_bigendian else '<u2')
    got = image_to_rgb(message(f'bayer_{pattern}16', raw, HEIGHT, WIDTH, is_bigendian))
    np.testing.assert_array_equal(got, flat)


@pytest.mark.parametrize('encoding, order', [('yuv422', 'UYVY'), ('yuv422_yuy2', 'YUYV')])
def test_yuv422_byte_orders_give_bt601_rgb(encoding, order):
    y, u, v = yuv_planes()
    packed = np.empty((HEIGHT, WIDTH * 2), np.uint8)
    if order == 'UYVY':
        packed[:, 0::4], packed[:, 1::4], packed[:, 2::4], packed[:, 3::4] = u, y[:, 0::2], v, y[:, 1::2]
    else:
        packed[:, 0::4], packed[:, 1::4], packed[:, 2::4], packed[:, 3::4] = y[:, 0::2], u, y[:, 1::2], v
    got = image_to_rgb(message(encoding, packed, HEIGHT, WIDTH))
    expected = bt601_limited(y, np.repeat(u, 2, axis=1), np.repeat(v, 2, axis=1))
    assert got.shape == (HEIGHT, WIDTH, 3) and np.abs(got.astype(int) - expected).max() <= 2


def test_nv12_gives_bt601_rgb():
    y, u, v = yuv_planes(1)
    u, v = u[::2], v[::2]                                   # 4:2:0: one chroma pair per 2x2 block
    chroma = np.empty((HEIGHT // 2, WIDTH), np.uint8)
    chroma[:, 0::2], chroma[:, 1::2] = u, v
    got = image_to_rgb(message('nv12', np.concatenate([y, chroma]), HEIGHT, WIDTH))
    expected = bt601_limited(y, np.repeat(np.repeat(u, 2, 0), 2, 1), np.repeat(np.repeat(v, 2, 0), 2, 1))
    assert np.abs(got.astype(int) - expected).max() <= 2


@pytest.mark.parametrize('msg, match', [
    (Image(height=2, width=3, encoding='yuv422', step=6, data=bytes(12)), 'width 3 is odd'),
    (Image(height=3, width=4, encoding='nv12', step=4, data=bytes(18)), 'height 3 is odd'),
    (Image(height=2, width=4, encoding='nv12', step=4, data=bytes(8)), 'data has 8 bytes'),
    (Image(height=2, width=4, encoding='yuv422', step=4, data=bytes(8)), 'step 4 is smaller'),
    (Image(height=2, width=2, encoding='bayer_rggb16', step=4, data=bytes(4)), 'data has 4 bytes'),
    (Image(height=2, width=2, encoding='32FC1', step=8, data=bytes(16)), "'32FC1' is not supported"),
])
def test_bad_sizes_and_unknown_encodings_name_the_problem(msg, match):
    with pytest.raises(ConversionError, match=match):
        image_to_rgb(msg)


def test_every_listed_encoding_converts():
    for encoding in RGB_SOURCE_ENCODINGS:
        rows = HEIGHT * 3 // 2 if encoding == 'nv12' else HEIGHT
        width_bytes = {'rgb8': 3, 'bgr8': 3, 'rgba8': 4, 'bgra8': 4, 'yuv422': 2, 'yuv422_yuy2': 2,
                       'mono16': 2}.get(encoding, 2 if encoding.endswith('16') else 1) * WIDTH
        got = image_to_rgb(Image(height=HEIGHT, width=WIDTH, encoding=encoding, step=width_bytes,
                                 data=bytes(width_bytes * rows)))
        assert got.shape == (HEIGHT, WIDTH, 3) and got.dtype == np.uint8, encoding


# ----------------------------------------------------------------------------- CompressedImage
def compressed(data: bytes, fmt: str) -> CompressedImage:
    return CompressedImage(format=fmt, data=data)


def test_png_round_trip_is_exact_and_jpeg_close():
    rgb = smooth_rgb()
    png = rgb_to_compressed_image(rgb, format='png')
    assert png.format == 'rgb8; png compressed bgr8'
    np.testing.assert_array_equal(compressed_image_to_rgb(png), rgb)
    jpeg = rgb_to_compressed_image(rgb, quality=95)
    assert jpeg.format == 'rgb8; jpeg compressed bgr8' and bytes(jpeg.data[:3]) == b'\xff\xd8\xff'
    assert np.abs(compressed_image_to_rgb(jpeg).astype(int) - rgb).mean() < 3
    np.testing.assert_array_equal(camera_image_to_rgb(png), rgb)        # the node's entry point


@pytest.mark.parametrize('fmt', ['png', 'bgr8; png compressed bgr8', '', 'jpeg'])
def test_format_strings_of_image_transport_and_wrong_ones_decode_by_the_data(fmt):
    rgb = smooth_rgb()
    ok, data = cv2.imencode('.png', rgb[..., ::-1])           # what image_transport stores: BGR bytes
    np.testing.assert_array_equal(compressed_image_to_rgb(compressed(data.tobytes(), fmt)), rgb)


def test_grey_and_16_bit_pngs_become_rgb():
    grey = smooth_rgb()[..., 1]
    _, data = cv2.imencode('.png', grey)
    np.testing.assert_array_equal(compressed_image_to_rgb(compressed(data.tobytes(), 'mono8; png compressed mono8')),
                                  np.repeat(grey[..., None], 3, axis=2))
    _, data16 = cv2.imencode('.png', grey.astype(np.uint16) << 8 | 0x55)
    np.testing.assert_array_equal(compressed_image_to_rgb(compressed(data16.tobytes(), 'mono16; png compressed mono16')),
                                  np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize('msg, match', [
    (compressed(b'', 'jpeg'), 'no data'),
    (compressed(b'hello world', 'jpeg'), 'OpenCV cannot decode'),
    (compressed(b'hello world', 'theora'), 'neither JPEG nor PNG'),
    (compressed(b'\x89PNG\r\n\x1a\n' + bytes(20), 'png'), 'OpenCV cannot decode'),
    (compressed(bytes(10), '16UC1; compressedDepth png'), 'compressedDepth'),
])
def test_damaged_or_foreign_compressed_data_is_a_clear_error(msg, match):
    with pytest.raises(ConversionError, match=match):
        compressed_image_to_rgb(msg)
