"""core.frame_pipeline.FramePipeline without ROS: the real inference core (a small checkpoint), the
real tracker, synthetic clouds and images. Each policy case is a story: this stream of stamps and
receipt times in, so many frames processed and these counters out."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from mtl_perception_ros.core.camera_calibration import CameraCalibration
from mtl_perception_ros.core.frame_pipeline import FramePipeline, PairedFrame, PipelineConfig
from mtl_perception_ros.core.inference import PerceptionInference
from mtl_perception_ros.core.tracking import Tracker
from mtl_perception_ros.core.transform_buffer import TransformBuffer
from sensor_samples import IMAGE_HW, make_small_checkpoint, synthetic_cloud, synthetic_image

TWENTY_YEARS_S = 20 * 365.25 * 86400
CAMERA_DELAY_S = 0.004
# The node's default calibration (A2D2 front camera; IMAGE_HW has its aspect ratio).
CALIBRATION = CameraCalibration.from_parameters(
    [0.0, -1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
    [1000.0, 0.0, 960.0, 0.0, 1000.0, 604.0, 0.0, 0.0, 1.0], [0.0] * 5, [1920, 1208])


@pytest.fixture(scope='module')
def inference(tmp_path_factory):
    return PerceptionInference(make_small_checkpoint(tmp_path_factory.mktemp('model') / 'small.pt'), device='cpu')


@pytest.fixture(scope='module')
def scene():
    """A static scene: the same cloud (intensity scaled to [0, 1]) and image every frame."""
    rng = np.random.default_rng(0)
    cloud = synthetic_cloud(rng)
    cloud[:, 3] /= 255.0
    return cloud, synthetic_image(rng)


class Story:
    """Feeds a pipeline clouds and images, processes every ready frame at once, keeps the results."""

    def __init__(self, inference, scene, tracking: bool = True, notify=None, **config):
        self.pipeline = FramePipeline(inference, {'image': CALIBRATION}, PipelineConfig(**config),
                                      Tracker() if tracking else None, notify=notify)
        self.cloud, self.image = scene
        self.results = []
        self.clock = 100.0            # receipt time (s), monotonic

    def points(self, stamp_s: float, receipt_s: float | None = None, cloud=None):
        frames = self.pipeline.add_points(ns(stamp_s), cloud, self.clock if receipt_s is None else receipt_s)
        self._process(frames)

    def image_at(self, stamp_s: float, receipt_s: float | None = None, image=None):
        frames = self.pipeline.add_image('image', ns(stamp_s), image,
                                         (self.clock if receipt_s is None else receipt_s) + CAMERA_DELAY_S)
        self._process(frames)

    def _process(self, frames):
        for frame in frames:
            cloud = self.cloud if frame.points is None else frame.points
            image = self.image if frame.images.get('image') is None else frame.images['image']
            result = self.pipeline.process(frame, cloud, {'image': image})
            if result is not None:
                self.results.append(result)

    def pairs(self, first_stamp_s: float, count: int, period_s: float = 0.1, clock_period_s: float | None = None):
        """`count` cloud + image pairs (image 4 ms after its cloud), the clock advancing with them."""
        for i in range(count):
            stamp = first_stamp_s + i * period_s
            self.points(stamp)
            self.image_at(stamp + CAMERA_DELAY_S)
            self.clock += period_s if clock_period_s is None else clock_period_s

    def clouds(self, first_stamp_s: float, count: int, period_s: float = 0.1):
        for i in range(count):
            self.points(first_stamp_s + i * period_s)
            self.clock += period_s

    @property
    def counts(self) -> dict:
        return self.pipeline.counts()

    def track_ids(self, results=None) -> set:
        return {int(i) for r in (self.results if results is None else results) for i in r.track_ids if i > 0}


def ns(stamp_s: float) -> int:
    return int(round(stamp_s * 1e9))


# ----------------------------------------------------------------------------- the normal case
def test_every_pair_is_processed_with_the_camera_and_tracked(inference, scene):
    story = Story(inference, scene)
    story.pairs(1000.0, 10)
    assert len(story.results) == 10
    assert not any(r.lidar_only for r in story.results)
    assert [r.points_stamp_ns for r in story.results] == [ns(1000.0 + i * 0.1) for i in range(10)]
    assert [r.image_stamps_ns['image'] for r in story.results] == [ns(1000.0 + i * 0.1 + CAMERA_DELAY_S)
                                                                   for i in range(10)]
    assert all(len(r.boxes) > 0 and r.class_maps['image'].shape == IMAGE_HW for r in story.results)
    assert story.track_ids(), 'the static scene gets confirmed tracks'
    counts = story.counts
    assert counts['processed'] == counts['synced_pairs'] == 10 and 'processed_lidar_only' not in counts
    assert not any(k.startswith(('time.', 'skipped.')) for k in counts), counts
    assert {'prepare', 'inference', 'tracking', 'model.model', 'total'} <= set(story.results[0].timings_ms)
    assert story.results[-1].counts['processed'] == 10


def test_results_equal_the_inference_core_on_the_same_frame(inference, scene):
    story = Story(inference, scene, tracking=False)
    story.pairs(1000.0, 1)
    (result,) = story.results
    cloud, image = scene
    undistorted, camera_matrix, lidar_to_camera = CALIBRATION.prepare_image(image) + (CALIBRATION.lidar_to_camera,)
    expected = inference(cloud, undistorted, camera_matrix, lidar_to_camera)
    np.testing.assert_array_equal(result.boxes, expected.boxes)
    np.testing.assert_array_equal(result.scores, expected.scores)
    np.testing.assert_array_equal(result.class_maps['image'], expected.class_map)
    assert result.tracks is None and result.track_ids is None


# ----------------------------------------------------------------------------- time jumps and bad stamps
def test_a_30_s_jump_back_resets_and_every_pair_after_it_is_processed(inference, scene):
    """Before: 0 of the 25 pairs after the jump (out_of_order_late); the tracker restarts with new ids."""
    story = Story(inference, scene)
    story.pairs(1000.0, 25)
    before = list(story.results)
    story.pairs(1000.0 + 2.5 - 30.0, 25)
    after = story.results[len(before):]
    assert len(before) == 25 and len(after) == 25
    counts = story.counts
    assert counts['time.jump_back.points'] == 1 and counts['time.resets'] == 1
    assert 'time.jump_back.image' not in counts            # the image stream's jump is no second reset
    assert story.track_ids(after) and min(story.track_ids(after)) > max(story.track_ids(before))
    assert story.pipeline.sync_stats()['dropped']['out_of_order_late'] == [0, 0]


def test_scenes_whose_stamps_jump_back_keep_their_last_frame(inference, scene):
    """A bag of several recordings, each with its own stamps, played in a row. The camera is stamped
    4 ms before its cloud, so each pair waits for the next image to prove it is the nearest one; at
    the jump the last pair of the scene pairs with what it has instead of being dropped with the
    reset. Before: that pair was dropped."""
    story = Story(inference, scene, tracking=False)
    for start in (1000.0, 500.0, 200.0):
        for i in range(10):
            story.image_at(start + i * 0.1 - CAMERA_DELAY_S)
            story.points(start + i * 0.1)
            story.clock += 0.1
    story.points(100.0)     # the next scene's first cloud: the third scene's last frame leaves too
    stamps = [r.points_stamp_ns for r in story.results]
    assert stamps == [ns(start + i * 0.1) for start in (1000.0, 500.0, 200.0) for i in range(10)]
    assert all(r.image_stamps_ns['image'] == r.points_stamp_ns - ns(CAMERA_DELAY_S) for r in story.results)
    assert story.counts['time.resets'] == 3 and story.pipeline.sync_stats()['dropped']['reset'] == [0, 0]


def test_the_last_pair_before_a_gap_is_fused_when_the_camera_falls_silent(inference, scene):
    """A bag of scenes with a pause between them (stamps and clock move on by 3 s): the camera is
    stamped before its cloud, so each scene's last pair waits for a later image when the next
    scene's first cloud finds the camera silent. That pair leaves fused; the new cloud runs
    LiDAR-only (a known limit: its image comes just after it). Before: the pair was dropped."""
    story = Story(inference, scene, tracking=False)
    for start in (1000.0, 1004.0):
        for i in range(5):
            if start == 1004.0 and i == 0:      # the next scene's first cloud comes before its image
                story.points(start)
                story.image_at(start - CAMERA_DELAY_S)
            else:
                story.image_at(start + i * 0.1 - CAMERA_DELAY_S)
                story.points(start + i * 0.1)
            story.clock += 0.1
        story.clock += 3.0
    fused = [r.points_stamp_ns for r in story.results if not r.lidar_only]
    assert fused == [ns(1000.0 + i * 0.1) for i in range(5)] + [ns(1004.0 + i * 0.1) for i in range(1, 4)]
    assert [r.points_stamp_ns for r in story.results if r.lidar_only] == [ns(1004.0)]
    assert story.counts['camera_silent.image'] == 1
    assert story.pipeline.sync_stats()['dropped']['reset'] == [0, 0]


def test_one_image_stamped_20_years_ahead_is_an_outlier_and_pairs_go_on(inference, scene):
    """Before: 0 of the following pairs (the synchronizer's newest image stamp was 2046)."""
    story = Story(inference, scene)
    story.pairs(1000.0, 10)
    story.points(1001.0)
    story.image_at(1001.0 + TWENTY_YEARS_S)
    story.clock += 0.1
    story.pairs(1001.1, 20)
    assert len(story.results) == 30              # the cloud whose image was bad finds no partner
    assert story.counts['skipped.future_stamp.image'] == 1 and 'time.resets' not in story.counts


def test_after_a_future_image_the_camera_timeout_still_fires(inference, scene):
    """Before: no LiDAR-only output either (the timeout compared against the maximum image stamp)."""
    story = Story(inference, scene, camera_timeout_s=0.5)
    story.pairs(1000.0, 10)
    story.image_at(1001.0 + TWENTY_YEARS_S)       # the camera's last words, then it is silent
    story.clouds(1001.0, 20)
    lidar_only = [r for r in story.results if r.lidar_only]
    assert len(lidar_only) >= 14 and all(not r.class_maps and not r.images for r in lidar_only)
    assert story.counts['processed_lidar_only'] == len(lidar_only)
    assert story.pipeline.lidar_only_active
    story.pairs(1003.0, 3)                         # and the camera comes back
    assert not story.results[-1].lidar_only and not story.pipeline.lidar_only_active


def test_one_cloud_stamped_far_ahead_is_an_outlier_and_pairs_go_on(inference, scene):
    """Before: 0 of the 20 pairs after it."""
    story = Story(inference, scene)
    story.pairs(1000.0, 10)
    story.points(1000.0 + 1e6)
    story.pairs(1001.0, 20)
    assert len(story.results) == 30
    assert story.counts['skipped.future_stamp.points'] == 1 and 'time.resets' not in story.counts


@pytest.mark.parametrize('stream', ['points', 'image'])
def test_a_wrapped_negative_stamp_is_a_counted_skip(inference, scene, stream):
    """2046 does not fit builtin_interfaces/Time's int32 seconds: it arrives as 1901, a negative stamp."""
    story = Story(inference, scene)
    story.pairs(1000.0, 5)
    wrapped_s = (1000.0 + TWENTY_YEARS_S + 2 ** 31) % 2 ** 32 - 2 ** 32    # 2046 - 2^32 s
    (story.points if stream == 'points' else story.image_at)(wrapped_s)
    story.pairs(1000.5, 5)
    assert len(story.results) == 10               # the bad message alone is lost
    assert story.counts[f'skipped.bad_stamp.{stream}'] == 1 and 'time.resets' not in story.counts


def test_streams_that_moved_ahead_together_are_a_new_time_base_and_nothing_is_lost(inference, scene):
    """A new recording 100 s later: its first cloud is held until its image agrees; tracking restarts."""
    story = Story(inference, scene)
    story.pairs(1000.0, 10)
    before = list(story.results)
    story.pairs(1101.0, 10)
    after = story.results[len(before):]
    assert len(after) == 10
    counts = story.counts
    assert counts['time.new_time_base.points'] == counts['time.new_time_base.image'] == 1
    assert 'time.resets' not in counts and not any(k.startswith('skipped.') for k in counts), counts
    assert min(story.track_ids(after)) > max(story.track_ids(before))


def test_one_stream_that_moved_ahead_alone_is_a_new_time_base_after_three_messages(inference, scene):
    """LiDAR-only (no camera at all): three consecutive clouds 100 s ahead that agree; none is lost."""
    story = Story(inference, scene, camera_timeout_s=0.3)
    story.clouds(1000.0, 10)
    lidar_only = len(story.results)
    story.clouds(1100.0, 5)
    assert lidar_only >= 5 and len(story.results) == lidar_only + 5
    assert all(r.lidar_only for r in story.results)
    assert story.counts['time.new_time_base.points'] == 1 and 'skipped.future_stamp.points' not in story.counts


def test_far_ahead_stamps_that_disagree_stay_outliers(inference, scene):
    story = Story(inference, scene)
    story.pairs(1000.0, 5)
    for i, jump in enumerate((1e3, 2e3, 3e3)):     # three, but each far from the one before
        story.points(1000.5 + i * 0.1 + jump)
        story.image_at(1000.5 + i * 0.1 + CAMERA_DELAY_S)
        story.clock += 0.1
    story.pairs(1000.8, 5)
    assert 'time.resets' not in story.counts and story.counts['skipped.future_stamp.points'] == 3
    assert len(story.results) == 10


def test_a_bag_replayed_twice_is_processed_on_both_passes(inference, scene):
    """Before: 0 detections on the second pass. A 3 s bag jumps back by more than the threshold."""
    story = Story(inference, scene)
    story.pairs(1000.0, 30)
    story.pairs(1000.0, 30)
    assert len(story.results) == 60
    assert story.counts['time.jump_back.points'] == 1


def test_a_looped_bag_shorter_than_the_jump_threshold_gives_output_on_every_pass(inference, scene):
    """`mtl_bag_play --loop` of a 4-frame bag (0.3 s): each pass goes back less than
    time_jump_threshold_s, so the third consecutive message behind the stream makes the jump."""
    story = Story(inference, scene)
    per_pass = []
    for _ in range(4):
        before = len(story.results)
        story.pairs(1000.0, 4)
        per_pass.append(len(story.results) - before)
    assert per_pass == [4, 2, 2, 2]
    assert story.counts['time.jump_back.points'] == 3 and story.counts['time.resets'] == 3


def test_a_clock_jump_resets_and_the_next_pair_is_processed_with_new_track_ids(inference, scene):
    """use_sim_time and /clock going back: the node calls clock_jumped()."""
    story = Story(inference, scene)
    story.pairs(1000.0, 5)
    before = list(story.results)
    story.pipeline.clock_jumped()
    story.pairs(1000.5, 5)
    after = story.results[len(before):]
    assert len(after) == 5 and story.counts['time.clock_jump'] == 1 and story.counts['time.resets'] == 1
    assert min(story.track_ids(after)) > max(story.track_ids(before))


def test_a_frame_paired_before_a_reset_and_processed_after_it_is_dropped(inference, scene):
    story = Story(inference, scene)
    frames = story.pipeline.add_points(ns(1000.0), None, 1.0) + story.pipeline.add_image('image', ns(1000.004),
                                                                                          None, 1.0)
    assert len(frames) == 1
    story.pipeline.clock_jumped()
    story.pairs(2000.0, 1)
    assert story.pipeline.process(frames[0], scene[0], {'image': scene[1]}) is None
    assert story.counts['dropped_after_reset'] == 1 and story.counts['processed'] == 1


# ----------------------------------------------------------------------------- the camera timeout
def test_a_slow_replay_stays_fused(inference, scene):
    """Stamps 0.1 s apart arriving 0.8 s apart: the clock alone would call the camera silent."""
    story = Story(inference, scene, camera_timeout_s=0.3)
    story.pairs(1000.0, 6, clock_period_s=0.8)
    assert len(story.results) == 6 and not any(r.lidar_only for r in story.results)


def test_a_jump_of_the_stamps_alone_is_no_dropout(inference, scene):
    """Stamps 0.6 s apart arriving 0.1 s apart (a jump within the future tolerance)."""
    story = Story(inference, scene, camera_timeout_s=0.3)
    story.pairs(1000.0, 6, period_s=0.6, clock_period_s=0.1)
    assert len(story.results) == 6 and not any(r.lidar_only for r in story.results)


def test_a_silent_camera_gives_lidar_only_frames_until_it_is_back(inference, scene):
    events = []
    story = Story(inference, scene, camera_timeout_s=0.3, notify=lambda *event: events.append(event))
    story.pairs(1000.0, 3)
    story.clouds(1000.3, 10)
    story.pairs(1001.3, 3)
    flags = [r.lidar_only for r in story.results]
    assert flags[:3] == [False] * 3 and flags[-2:] == [False] * 2
    assert sum(flags) >= 7
    assert [key for _, key, _ in events] == ['lidar_only', 'camera_back']


def test_three_cameras_one_silenced_the_others_keep_fusing(inference, scene):
    """Each cloud gets every camera's nearest image; a missing image costs only that camera in that
    frame; a camera silent past camera_timeout_s is left out (reported) until its images are back."""
    cameras = ('front', 'left', 'right')
    events = []
    pipeline = FramePipeline(inference, {c: CALIBRATION for c in cameras},
                             PipelineConfig(cameras=cameras, camera_timeout_s=0.3, camera_time_offsets_s=(0.0, 0.0, -0.01)),
                             notify=lambda *event: events.append(event))
    cloud, image = scene
    results, silent_seen = [], set()

    def frame_at(i: int, with_cameras):
        stamp, clock = 1000.0 + 0.1 * i, 100.0 + 0.1 * i
        frames = pipeline.add_points(ns(stamp), None, clock)
        for camera in with_cameras:       # right is stamped 10 ms late: its offset corrects it
            delay = 0.014 if camera == 'right' else 0.004
            frames += pipeline.add_image(camera, ns(stamp + delay), None, clock + delay)
        for frame in frames:
            results.append(pipeline.process(frame, cloud, {c: image for c in frame.images}))
        silent_seen.update(pipeline.silent_cameras)

    for i in range(10):
        frame_at(i, cameras if i != 5 else ('front', 'left'))     # one right image lost
    for i in range(10, 20):
        frame_at(i, ('front', 'left'))                            # right goes silent
    assert pipeline.silent_cameras == ['right'] and not pipeline.lidar_only_active
    for i in range(20, 25):
        frame_at(i, cameras)
    used = [tuple(r.image_stamps_ns) for r in results]
    assert [r.points_stamp_ns for r in results] == [ns(1000.0 + 0.1 * i) for i in range(25)]    # none lost
    assert used[:5] == [cameras] * 5 and used[5] == ('front', 'left') and used[6:10] == [cameras] * 4
    # the cloud that comes before right's first image after the silence is paired without it
    assert used[10:21] == [('front', 'left')] * 11 and used[21:] == [cameras] * 4
    assert all(set(r.class_maps) == set(u) for r, u in zip(results, used))
    assert not any(r.lidar_only for r in results) and silent_seen == {'right'}
    assert pipeline.silent_cameras == []
    counts = pipeline.counts()
    assert counts['fused.front'] == 25 and counts['fused.right'] == 13 and counts['camera_silent.right'] == 1
    keys = [key for _, key, _ in events]
    assert keys == ['camera_silent.right', 'camera_back.right'], events
    stats = pipeline.sync_stats()
    assert stats['stream_names'] == ['points/front', 'front', 'points/left', 'left', 'points/right', 'right']
    assert stats['received'][:2] == [25, 25]


def test_a_camera_without_calibration_is_left_out_until_it_has_one(inference, scene):
    story = Story(inference, scene, tracking=False)
    story.pipeline.set_calibration('image', CameraCalibration())         # nothing known yet
    story.pairs(1000.0, 2)
    assert all(r.lidar_only for r in story.results) and story.counts['skipped.no_intrinsics.image'] == 2
    assert story.pipeline.apply_camera_info('image', CALIBRATION.camera_matrix, [0.0] * 5, 'plumb_bob', (1920, 1208))
    story.pairs(1000.2, 2)
    assert all(r.lidar_only for r in story.results[2:]) and story.counts['skipped.no_extrinsics.image'] == 2
    assert not story.pipeline.apply_camera_info('image', [[0.0] * 3] * 3, [0.0] * 5, 'plumb_bob', (1920, 1208))
    assert story.counts['skipped.bad_camera_info'] == 1
    # TF arrives (the cloud's frame -> the image's): the camera is fused, the source logged once.
    buffer = TransformBuffer()
    story.pipeline.transforms = buffer.lookup
    events = []
    story.pipeline._notify = lambda *event: events.append(event)

    def frame_at(stamp_s):
        frames = story.pipeline.add_points(ns(stamp_s), None, 200.0 + stamp_s) + story.pipeline.add_image(
            'image', ns(stamp_s + 0.004), None, 200.004 + stamp_s)
        (result,) = [story.pipeline.process(f, scene[0], {'image': scene[1]}, cloud_frame='vehicle',
                                            image_frames={'image': 'camera_front'}) for f in frames]
        return result
    assert frame_at(1000.4).lidar_only and story.pipeline.counts()['skipped.no_extrinsics.image'] == 3
    assert 'does not exist (no transforms received)' in events[-1][2]
    buffer.set_matrix('camera_front', 'vehicle', 0, CALIBRATION.lidar_to_camera, static=True)   # vehicle in camera
    for stamp_s in (1000.6, 1000.8):
        result = frame_at(stamp_s)
        assert not result.lidar_only and result.class_maps['image'].shape == IMAGE_HW
    assert story.pipeline.counts()['extrinsics.tf.image'] == 2
    assert [event for event in events if event[1] == 'extrinsics.image'] == [
        ('info', 'extrinsics.image', 'image: extrinsics from TF (vehicle -> camera_front)')]


def test_the_first_pair_after_an_idle_start_is_fused(inference, scene):
    """Before the first image the timeout counts from the first cloud, whose image comes late."""
    story = Story(inference, scene, camera_timeout_s=0.3)
    story.clock = 5000.0
    story.points(1000.0)
    story.image_at(1000.004, receipt_s=5000.1)
    assert len(story.results) == 1 and not story.results[0].lidar_only


# ----------------------------------------------------------------------------- frames the pipeline skips
def test_bad_clouds_and_images_are_counted_and_degrade_the_frame(inference, scene):
    story = Story(inference, scene, tracking=False)
    cloud = scene[0].copy()
    cloud[:10, 0] = np.nan
    story.points(1000.0, cloud=cloud)
    story.image_at(1000.004, image=np.zeros((100, 100, 3), np.uint8))   # not the calibration's aspect ratio
    story.points(1000.1, cloud=np.full((5, 4), np.nan, np.float32))
    story.image_at(1000.104)
    counts = story.counts
    assert len(story.results) == 1 and story.results[0].lidar_only and story.results[0].image_stamps_ns == {}
    assert counts['points.non_finite'] == 15 and counts['skipped.empty_pointcloud'] == 1
    assert counts['skipped.bad_image'] == 1 and counts['processed_lidar_only'] == 1
    story.pipeline.skip('bad_pointcloud', 'the caller could not convert a cloud')
    assert story.counts['skipped.bad_pointcloud'] == 1


def test_the_point_limits_apply_with_max_points_and_are_counted(inference, scene):
    events = []
    story = Story(inference, scene, tracking=False, notify=lambda *event: events.append(event), max_points=500)
    cloud = np.concatenate([scene[0]] * 3)          # > 500 points
    cloud[0, 3] = 3e38                               # an intensity the model never saw
    cloud[1, 1] = 1e30                               # garbage coordinate
    seen = []

    class Spy:
        """The inference, recording the points it is given."""
        def __getattr__(self, name):
            return getattr(inference, name)

        def run_views(self, points, *args, **kwargs):
            seen.append(points)
            return inference.run_views(points, *args, **kwargs)

    story.pipeline.inference = Spy()
    story.points(1000.0, cloud=cloud)
    story.image_at(1000.004)
    counts = story.counts
    assert len(seen) == 1 and len(seen[0]) == 500
    assert 0.0 <= seen[0][:, 3].min() and seen[0][:, 3].max() <= 1.0
    assert np.abs(seen[0][:, :3]).max() < 1e4
    assert counts['points.intensity_clamped'] == 1 and counts['points.coordinate_out_of_range'] == 1
    assert counts['points.over_max_points'] == len(cloud) - 1 - 500     # one dropped, the clamped one kept
    assert {key for _, key, _ in events} >= {'points.intensity_clamped', 'points.over_max_points'}
    with pytest.raises(ValueError, match='max_points'):
        PipelineConfig(max_points=-1)


def test_a_calibration_that_projects_nothing_is_counted(inference, scene):
    story = Story(inference, scene, tracking=False)
    behind = scene[0].copy()
    behind[:, 0] = -behind[:, 0]
    story.points(1000.0, cloud=behind)
    story.image_at(1000.004)
    assert len(story.results) == 1 and story.counts['skipped.calibration_projects_nothing'] == 1


# ----------------------------------------------------------------------------- configuration
@pytest.mark.parametrize('changes, named', [
    ({'slop_s': -0.1}, 'slop_s'), ({'queue_size': 0}, 'queue_size'), ({'queue_size': 2.5}, 'queue_size'),
    ({'camera_timeout_s': float('nan')}, 'camera_timeout_s'), ({'time_jump_threshold_s': 0}, 'time_jump_threshold_s'),
    ({'future_stamp_tolerance_s': -1.0}, 'future_stamp_tolerance_s'), ({'cameras': ('a', 'a')}, 'cameras'), ({'cameras': ()}, 'cameras'),
    ({'camera_time_offsets_s': (0.1, 0.2)}, 'camera_time_offsets_s'),
    ({'cameras': ('points',)}, 'cameras'), ({'points_min_interval_s': True}, 'points_min_interval_s')])
def test_bad_settings_are_refused_naming_the_setting(changes, named):
    with pytest.raises(ValueError, match=named):
        PipelineConfig(**changes)


def test_update_changes_settings_at_run_time_and_keeps_the_counters(inference, scene):
    story = Story(inference, scene, tracking=False)
    story.pairs(1000.0, 4)
    story.points(1000.4)                                       # pending when the synchronizer is replaced
    config = story.pipeline.update(slop_s=0.002, camera_timeout_s=2.0)
    assert config.slop_s == 0.002 and story.pipeline.config is config
    story.pairs(1000.5, 3)                                     # images 4 ms off: beyond the new slop
    assert len(story.results) == 4
    stats = story.pipeline.sync_stats()
    assert stats['emitted_sets'] == 4 and stats['received'] == [8, 7] and stats['dropped']['reset'] == [1, 0]
    with pytest.raises(ValueError, match='slop_s'):
        story.pipeline.update(slop_s=-1.0)
    with pytest.raises(TypeError):
        story.pipeline.update(no_such_setting=1)
    assert story.pipeline.config is config
    story.pipeline.update(slop_s=0.05)
    story.pairs(1001.0, 2)
    assert len(story.results) == 6


def test_pairing_and_processing_in_two_threads(inference, scene):
    """The node's shape: the executor thread pairs, a worker processes the newest frame."""
    pipeline = FramePipeline(inference, {'image': CALIBRATION}, PipelineConfig(), Tracker())
    ready, done, results = [], threading.Event(), []
    condition = threading.Condition()

    def worker():
        while True:
            with condition:
                condition.wait_for(lambda: ready or done.is_set(), timeout=5)
                if not ready and done.is_set():
                    return
                frame = ready.pop() if ready else None
                ready.clear()
            if frame is not None:
                results.append(pipeline.process(frame, scene[0], {'image': scene[1]}))
    thread = threading.Thread(target=worker)
    thread.start()
    for i in range(40):
        stamp = ns(1000.0 + i * 0.1)
        frames = pipeline.add_points(stamp, None, i * 0.1) + pipeline.add_image('image', stamp + 4_000_000, None,
                                                                                 i * 0.1)
        if i == 20:
            pipeline.clock_jumped()
        with condition:
            ready.extend(frames)
            condition.notify()
    with condition:
        done.set()
        condition.notify()
    thread.join(10)
    processed = [r for r in results if r is not None]
    counts = pipeline.counts()
    assert processed and counts['processed'] == len(processed)
    assert counts['synced_pairs'] == 40 and counts['time.resets'] == 1
    assert processed[-1].points_stamp_ns == ns(1003.9)          # the newest pair is never lost


def test_paired_frames_say_whether_they_are_lidar_only():
    assert PairedFrame(1, None, {}, {}, 0.0, 0).lidar_only
    assert not PairedFrame(1, None, {'image': 2}, {'image': None}, 0.0, 0).lidar_only
