#!/usr/bin/env bash
# The main job (README: `make run`): synthetic A2D2-layout data -> NPZ chunks (train / val / test
# by scene) -> the short training (best checkpoint chosen on val) -> evaluation table on test ->
# tracking on test -> a debug picture -> a bag of the test scenes replayed through the real node
# over DDS, its recorded outputs scored into a report. Re-running continues where it stopped
# (each step skips or resumes finished work).
#
#   scripts/main_job.sh [VENV_DIR] [--ci]     (--ci: a reduced size that runs in ~1 minute)
#   Environment: MTL_OUTPUT (default output/ or output/ci/)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=.venv
ci=false
for arg in "$@"; do
  case "$arg" in
    --ci) ci=true ;;
    *) venv=$arg ;;
  esac
done
py="$(cd "$venv" && pwd)/bin/python"
cd "$repo"

# 84 scenes x 6 frames: val 0.1 (9 scenes, 54 frames), test 0.4 (34 scenes, 204 frames, >= 80
# distinct objects of each class), train the rest (41 scenes, 246 frames); docs/training.md
if $ci; then
  out=${MTL_OUTPUT:-output/ci}; scenes=3; frames=3; config=training/configs/tiny_ci.yaml; rate=0.25
else
  out=${MTL_OUTPUT:-output}; scenes=84; frames=6; config=training/configs/short.yaml; rate=0.25
fi
workers=$(nproc 2>/dev/null || echo 2); workers=$(( workers > 8 ? 8 : workers ))   # data generation processes
rate=${MTL_REPLAY_RATE:-$rate}   # bag replay speed: slow enough for the CPU node to process every pair
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "[run] ($(( $(date +%s) - start )) s) $*"; }

step "1/8 synthetic A2D2-layout data: $scenes scenes x $frames frames -> $out/a2d2"
stamp="$out/a2d2/.complete"
want="scenes=$scenes frames=$frames seed=0 world=2"   # world: bump when the generator's output changes
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "already there ($want)"
else
  rm -rf "$out/a2d2"
  "$py" -m training.synthetic.synthesize --out "$out/a2d2" --scenes "$scenes" --frames "$frames" --seed 0 \
    --workers "$workers"
  echo "$want" > "$stamp"
fi

step "2/8 A2D2 layout -> NPZ chunks (train / val / test split by scene) -> $out/chunks"
"$py" -m training.data.convert --root "$out/a2d2" --out "$out/chunks" --val-fraction 0.1 --test-fraction 0.4 \
  --workers "$workers"

# What the run and the bag were made from: a run (or bag) of other chunks or another config is
# made again, never resumed or reused.
chunks_id="manifest=$(sha256sum "$out/chunks/manifest.json" | cut -c1-16)"
run_id="$chunks_id config=$(sha256sum "$config" | cut -c1-16)"
run_dir="$out/runs/$(basename "$config" .yaml)"
step "3/8 training ($config; model_best.pt chosen on val) -> $run_dir"
if [ -f "$run_dir/training_state.pt" ] && [ "$(cat "$run_dir/.job_inputs" 2>/dev/null)" = "$run_id" ]; then
  "$py" -m training.engine.train --out "$run_dir" --resume
else
  if [ -e "$run_dir" ]; then echo "$run_dir was made from other chunks or another config: training again"; fi
  rm -rf "$run_dir"; mkdir -p "$run_dir"; echo "$run_id" > "$run_dir/.job_inputs"
  "$py" -m training.engine.train --config "$config" "data.chunks=$out/chunks" --out "$run_dir"
fi

step "4/8 evaluation of $run_dir/model_best.pt on the test scenes (never used for a choice)"
"$py" -m training.evaluation.evaluate --checkpoint "$run_dir/model_best.pt" --chunks "$out/chunks" --split test \
  --json "$out/evaluation.json"

step "5/8 tracking (MOTA, IDF1, ID switches) on the test scenes -> $out/tracking.json, $out/tracks/"
"$py" -m training.evaluation.evaluate_tracking --checkpoint "$run_dir/model_best.pt" --chunks "$out/chunks" --split test \
  --json "$out/tracking.json" --plots "$out/tracks" --no-progress

step "6/8 debug picture of a test frame -> $out/sample_frame.png"
"$py" -m training.pictures.show --chunks "$out/chunks/$(cd "$out/chunks" && ls test_*.npz | head -1)" --out "$out/sample_frame.png"

step "7/8 bag of the test scenes -> $out/bags/test"
if [ -f "$out/bags/test/metadata.yaml" ] && [ "$(cat "$out/bags/.job_inputs" 2>/dev/null)" = "$chunks_id" ]; then
  echo "already there"
else
  rm -rf "$out/bags/test" "$out/bags/.job_inputs"
  "$py" -m training.export.to_bag --chunks "$out/chunks" --split test --out "$out/bags/test"
  echo "$chunks_id" > "$out/bags/.job_inputs"
fi

step "8/8 replay through mtl_perception_node over DDS (rate $rate), record its outputs, report -> $out/report"
bin=$(dirname "$py")
if ! "$py" -c 'import rclpy.node, sensor_msgs.msg, vision_msgs.msg' 2>/dev/null; then
  echo "skipped: rclpy / vision_msgs are not importable with $py (run scripts/setup_env.sh)"
else
  # DDS stays on this host, in a domain of its own unless ROS_DOMAIN_ID is set.
  export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST} ROS_LOCALHOST_ONLY=${ROS_LOCALHOST_ONLY:-1}
  export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( RANDOM % 100 + 1 ))}
  # Full-size images through shared memory in the node, the recorder and the player (docs/node.md,
  # "Large images over DDS"): over fragmented UDP, delivery stalled and 17-33 of the 204 pairs were lost.
  export FASTDDS_DEFAULT_PROFILES_FILE=${FASTDDS_DEFAULT_PROFILES_FILE:-$repo/config/fastdds_large_images.xml}
  logs="$out/logs"; recorded="$out/bags/test_node_outputs"
  mkdir -p "$logs"; rm -rf "$recorded"
  pids=()
  stop() {  # Ctrl-C (SIGINT) to each process group we started, then wait for it
    for pid in "$@"; do kill -INT -- "-$pid" 2>/dev/null || true; done
    for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
  }
  trap 'stop ${pids[@]+"${pids[@]}"}' EXIT
  wait_for() {  # wait_for FILE TEXT SECONDS PID
    for _ in $(seq $(( $3 * 5 ))); do
      grep -q "$2" "$1" && return 0
      kill -0 "$4" 2>/dev/null || { echo "it stopped; $1:"; tail -20 "$1"; return 1; }
      sleep 0.2
    done
    echo "timed out waiting for '$2' in $1"; tail -20 "$1"; return 1
  }
  set -m   # job control: background jobs get their own process group and keep SIGINT
  "$bin/mtl_perception_node" --ros-args --params-file config/mtl_perception.yaml \
    -p model_path:="$run_dir/model_best.pt" -p input_qos:=reliable \
    >"$logs/node.log" 2>&1 &
  node_pid=$!; pids+=("$node_pid")
  wait_for "$logs/node.log" "ready" 180 "$node_pid"
  # one answer per cloud of the bag on each output, then 2.5 s more for a /diagnostics after the last frame
  bag_frames=$("$py" -c 'import sys; from mtl_perception_ros.bags.reader import BagReader
with BagReader(sys.argv[1]) as bag: print(bag.topics["/points"][1])' "$out/bags/test")
  "$bin/mtl_bag_record" --topics /mtl_perception/detections /mtl_perception/camera/semantic/labels /diagnostics \
    --until /mtl_perception/detections="$bag_frames" /mtl_perception/camera/semantic/labels="$bag_frames" --linger 2.5 \
    --out "$recorded" >"$logs/recorder.log" 2>&1 &
  recorder_pid=$!; pids+=("$recorder_pid")
  wait_for "$logs/recorder.log" "recording /mtl_perception/camera/semantic/labels" 60 "$recorder_pid"
  wait_for "$logs/recorder.log" "recording /mtl_perception/detections" 60 "$recorder_pid"
  sleep 1
  "$bin/mtl_bag_play" "$out/bags/test" --rate "$rate" --qos reliable --wait-for-subscribers 60 \
    --topics /points /camera/image_raw 2>&1 | tee "$logs/player.log"
  # The recorder stops by itself once every frame is answered; a frame the node dropped never is.
  for _ in $(seq 150); do kill -0 "$recorder_pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$recorder_pid" 2>/dev/null && echo "not every one of the $bag_frames frames was answered within 30 s" \
    "(the report counts what is missing); $logs/node.log"
  stop "$recorder_pid" "$node_pid"
  pids=(); trap - EXIT; set +m
  tracking_args=()
  [ -f "$out/tracking.json" ] && tracking_args=(--tracking-json "$out/tracking.json" --track-plots "$out/tracks")
  "$py" -m training.evaluation.evaluate_bag --bag "$out/bags/test" --recorded "$recorded" \
    --checkpoint "$run_dir/model_best.pt" --out "$out/report" \
    ${tracking_args[@]+"${tracking_args[@]}"}
fi

cat <<DONE

[run] done in $(( $(date +%s) - start )) s. Outputs:
  $out/a2d2/               synthetic data in A2D2's on-disk layout (camera_lidar_semantic_bboxes)
  $out/chunks/             NPZ chunks + manifest.json (splits, class histograms, skip report)
  $run_dir/   model_best.pt / model_last.pt (node checkpoints), metrics_history.json,
                           pictures/ (GT vs predicted heatmaps and semantics), tensorboard/
  $out/evaluation.json     on the test scenes: per-class AP at 0.5/1/2/4 m, mAP, AP by range, TP errors,
                           per-class IoU, mIoU, pixel accuracy, the checkpoint's provenance
  $out/tracking.json       MOTA, IDF1, ID switches (per 100 frames), fragmentations per class
  $out/tracks/             BEV plots of tracks over time (GT dashed) per test scene
  $out/sample_frame.png    BEV targets, semantic overlay and LiDAR on a test frame
  $out/bags/test/          rosbag2 of the test scenes (sensors + ground truth); test_node_outputs/: what
                           the node published while it played; logs/: node, recorder and player output
  $out/report/report.md    the node's replayed outputs scored: AP, mIoU, sync/drops, latency, tracking, pictures
Run the node on the trained model:
  mtl_perception_node --ros-args --params-file config/mtl_perception.yaml -p model_path:=$run_dir/model_best.pt
DONE
