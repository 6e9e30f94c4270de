#!/usr/bin/env bash
# The main job (README: `make run`): synthetic A2D2-layout data -> NPZ chunks -> the short
# training -> evaluation table -> a debug picture. Re-running continues where it stopped
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

if $ci; then
  out=${MTL_OUTPUT:-output/ci}; scenes=2; frames=3; config=training/configs/tiny_ci.yaml
else
  out=${MTL_OUTPUT:-output}; scenes=10; frames=16; config=training/configs/short.yaml
fi
mkdir -p "$out"
start=$(date +%s)
step() { echo; echo "[run] ($(( $(date +%s) - start )) s) $*"; }

step "1/6 synthetic A2D2-layout data: $scenes scenes x $frames frames -> $out/a2d2"
stamp="$out/a2d2/.complete"
want="scenes=$scenes frames=$frames seed=0"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "already there ($want)"
else
  rm -rf "$out/a2d2"
  "$py" -m training.synthesize --out "$out/a2d2" --scenes "$scenes" --frames "$frames" --seed 0
  echo "$want" > "$stamp"
fi

step "2/6 A2D2 layout -> NPZ chunks (train/val split by scene) -> $out/chunks"
"$py" -m training.convert --root "$out/a2d2" --out "$out/chunks"

run_dir="$out/runs/$(basename "$config" .yaml)"
step "3/6 training ($config) -> $run_dir"
if [ -f "$run_dir/training_state.pt" ]; then
  "$py" -m training.train --out "$run_dir" --resume
else
  "$py" -m training.train --config "$config" "data.chunks=$out/chunks" --out "$run_dir"
fi

step "4/6 evaluation of $run_dir/model_best.pt on the validation scenes"
"$py" -m training.evaluate --checkpoint "$run_dir/model_best.pt" --chunks "$out/chunks" --split val \
  --json "$out/evaluation.json"

step "5/6 tracking (MOTA, IDF1, ID switches) on the validation scenes -> $out/tracking.json, $out/tracks/"
"$py" -m training.evaluate_tracking --checkpoint "$run_dir/model_best.pt" --chunks "$out/chunks" --split val \
  --json "$out/tracking.json" --plots "$out/tracks" --no-progress

step "6/6 debug picture of a validation frame -> $out/sample_frame.png"
"$py" -m training.show --chunks "$out/chunks/$(cd "$out/chunks" && ls val_*.npz | head -1)" --out "$out/sample_frame.png"

cat <<DONE

[run] done in $(( $(date +%s) - start )) s. Outputs:
  $out/a2d2/               synthetic data in A2D2's on-disk layout (camera_lidar_semantic_bboxes)
  $out/chunks/             NPZ chunks + manifest.json (splits, class histograms, skip report)
  $run_dir/   model_best.pt / model_last.pt (node checkpoints), metrics_history.json,
                           pictures/ (GT vs predicted heatmaps and semantics), tensorboard/
  $out/evaluation.json     per-class AP at 0.5/1/2/4 m, mAP, per-class IoU, mIoU, pixel accuracy
  $out/tracking.json       MOTA, IDF1, ID switches (per 100 frames), fragmentations per class
  $out/tracks/             BEV plots of tracks over time (GT dashed) per validation scene
  $out/sample_frame.png    BEV targets, semantic overlay and LiDAR on a validation frame
Run the node on the trained model:
  mtl_perception_node --ros-args --params-file config/mtl_perception.yaml -p model_path:=$run_dir/model_best.pt
DONE
