"""Tracking in the running node: a real process, the shipped YAML, the small checkpoint, real DDS.

The tracker's logic is tested on hand-made sequences in test_tracking.py. Here the scene is
static (the same cloud and image every frame), so the fixed-weight network gives the same boxes
each frame: after the confirmation frame every detection must carry the same track id in every
later frame, also across a dropped frame.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from ros_test_utils import require_ros

require_ros('visualization_msgs.msg', 'vision_msgs.msg')
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mtl_perception_ros.messages.image import rgb_to_image  # noqa: E402
from sensor_samples import header, make_small_checkpoint, synthetic_cloud, synthetic_image  # noqa: E402
from test_node import NAMESPACE, Harness, node_args, publish_pair, wait_for_ready  # noqa: E402

pytestmark = pytest.mark.ros
LABEL_ID = re.compile(r'\[(\d+)\]$')


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    return make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt')


@pytest.fixture
def harness(rclpy_context):
    harness = Harness(rclpy_context)
    harness.received['tracks'] = []
    harness.node.create_subscription(MarkerArray, f'{NAMESPACE}/mtl_perception/tracks',
                                     harness.received['tracks'].append, 50)
    return harness


def send_static_frames(harness, node, stamps) -> list:
    """Publish the same cloud and image at each stamp, one at a time; the Detection2DArray of each."""
    rng = np.random.default_rng(5)
    cloud, image = synthetic_cloud(rng), synthetic_image(rng)
    answers = []
    for stamp in stamps:
        cloud_msg, _ = publish_pair(harness, rng, stamp, cloud=cloud,
                                    image_msg=rgb_to_image(image, header(stamp + 0.004, 'camera_front')))
        assert harness.spin_until(lambda: any(d.header == cloud_msg.header for d in harness.received['detections']),
                                  20.0, node), f'no detections for the frame at {stamp} s:\n{node.output()}'
        answers.append(next(d for d in harness.received['detections'] if d.header == cloud_msg.header))
    return answers


def test_track_ids_are_filled_and_stay_the_same_across_frames_and_a_dropped_frame(harness, small_checkpoint,
                                                                                   ros_process):
    # inputs wait for answers: a long camera timeout keeps every frame camera + LiDAR
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=60.0']), name='node')
    wait_for_ready(harness, node, np.random.default_rng(4))
    # 2000 s is far after the warm-up frames: tracking restarts; 2000.4 is never sent (dropped)
    stamps = [2000.0, 2000.1, 2000.2, 2000.3, 2000.5, 2000.6]
    answers = send_static_frames(harness, node, stamps)
    counts = {len(a.detections) for a in answers}
    assert len(counts) == 1 and counts.pop() > 1, 'the static scene should give the same boxes every frame'

    first_ids = [d.id for d in answers[0].detections]
    assert set(first_ids) == {''}                       # tentative: birth after 2 frames (the YAML)
    confirmed = [d.id for d in answers[1].detections]
    assert all(re.fullmatch(r'\d+', i) for i in confirmed), confirmed
    assert len(set(confirmed)) == len(confirmed)        # one id per object
    for answer in answers[2:]:                          # the same object keeps its id, also after 2000.4
        assert [d.id for d in answer.detections] == confirmed
        assert [(d.bbox.center.position.x, d.bbox.center.position.y) for d in answer.detections] == \
            [(d.bbox.center.position.x, d.bbox.center.position.y) for d in answers[1].detections]

    # ~/tracks: the confirmed tracks, labelled with the same ids
    assert harness.spin_until(lambda: harness.received['tracks'], 10.0, node), node.output()
    labels = [m.text for m in harness.received['tracks'][-1].markers if m.text]
    assert all(m.ns == 'tracks' for m in harness.received['tracks'][-1].markers)
    assert sorted(LABEL_ID.search(text).group(1) for text in labels) == sorted(confirmed)
    assert harness.spin_until(lambda: harness.last_status().get('tracking.confirmed_tracks') == str(len(confirmed)),
                              5.0, node), harness.last_status()
    assert node.interrupt() == 0, node.output()


def test_tracking_disabled_gives_empty_ids_and_no_tracks(harness, small_checkpoint, ros_process):
    node = ros_process(node_args(small_checkpoint, ['camera_timeout_s:=60.0', 'tracking_enabled:=false']),
                       name='node')
    wait_for_ready(harness, node, np.random.default_rng(6))
    answers = send_static_frames(harness, node, [3000.0, 3000.1, 3000.2])
    assert all(len(a.detections) > 0 for a in answers)
    assert {d.id for a in answers for d in a.detections} == {''}
    assert harness.received['tracks'] == []
    assert 'tracking.confirmed_tracks' not in harness.last_status()
    assert node.interrupt() == 0, node.output()


def test_mismatched_gate_parameters_stop_startup_with_a_message(small_checkpoint, ros_process):
    node = ros_process(node_args(small_checkpoint, ['tracking_gates_m:=[4.0, 5.0]']), name='node')
    assert node.popen.wait(60) != 0
    assert 'tracking_gates_m' in node.output() and 'tracking_gate_classes' in node.output()
