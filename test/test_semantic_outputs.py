"""Semantic outputs made once at the model input size and written straight into message buffers."""
from __future__ import annotations

import numpy as np
import pytest

from mtl_perception_ros.core.labels import LabelSet, blend
from mtl_perception_ros.core.semantic_map import SemanticMap
from sensor_samples import REPO

LABELS = LabelSet.from_yaml(REPO / 'config/a2d2/semantic_classes.yaml')


def class_map(hw=(80, 128), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, len(LABELS), (hw[0] // 8, hw[1] // 8)).astype(np.uint8)
    return np.kron(small, np.ones((8, 8), np.uint8))[:hw[0], :hw[1]].copy()


def test_the_camera_size_map_and_its_colours_are_those_of_a_nearest_resize():
    semantic = SemanticMap(class_map(), (302, 481))                 # not a multiple of the input size
    labels = semantic.labels()
    assert labels.shape == (302, 481) and semantic.labels() is labels            # made once
    np.testing.assert_array_equal(semantic.colors(LABELS), LABELS.colorize(labels))
    # into buffers (the node's outgoing messages)
    out_labels, out_colors = np.zeros((302, 481), np.uint8), np.zeros((302, 481, 3), np.uint8)
    assert semantic.labels(out=out_labels) is out_labels and semantic.colors(LABELS, out=out_colors) \
        is out_colors
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_colors, LABELS.colorize(labels))
    same_size = SemanticMap(class_map(), (80, 128))
    assert same_size.labels() is same_size.input_labels


def test_blend_into_a_buffer_is_the_blend():
    rng = np.random.default_rng(1)
    image, colors = (rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(2))
    out = np.zeros_like(image)
    assert blend(image, colors, 0.3, out=out) is out
    np.testing.assert_array_equal(out, blend(image, colors, 0.3))
    mask = rng.random((40, 60)) > 0.5
    np.testing.assert_array_equal(blend(image, colors, 0.3, mask=mask, out=out), blend(image, colors, 0.3, mask=mask))


def test_an_image_buffer_is_published_without_a_copy_and_equals_a_built_message():
    pytest.importorskip('sensor_msgs.msg', reason='needs the ROS 2 message packages')
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    from mtl_perception_ros.messages.image import ImageBuffer, mono8_to_image, rgb_to_image
    from sensor_samples import header

    buffer = ImageBuffer()
    rgb = np.random.default_rng(2).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    view = buffer.pixels(rgb.shape)
    view[:] = rgb
    msg = buffer.message('rgb8', header(12.5, 'camera_optical'))
    assert deserialize_message(serialize_message(msg), Image) == rgb_to_image(rgb, header(12.5, 'camera_optical'))
    view[0, 0] = (1, 2, 3)                        # the message holds the buffer itself
    assert tuple(msg.data[:3]) == (1, 2, 3)
    assert buffer.pixels(rgb.shape) is not view and buffer.message('rgb8').data is msg.data    # same size: reused
    mono = buffer.pixels((30, 50))                  # another size: a new buffer; the old message keeps its own
    mono[:] = 7
    assert buffer.message('mono8') == mono8_to_image(np.full((30, 50), 7, np.uint8))
    assert len(msg.data) == rgb.nbytes
