#!/usr/bin/env bash
# Create or update the project's virtual environment; idempotent and quick when nothing changed.
#
#   scripts/setup_env.sh [VENV_DIR]      (default .venv; `make setup` calls this)
#
# Without ROS (ROS_DISTRO unset): pinned Python libraries + the ROS 2 Kilted wheels from PyPI,
# and vision_msgs built from third_party/vision_msgs into the venv.
# With a sourced ROS 2 (ROS_DISTRO set): the venv sees the distro's packages
# (--system-site-packages: rclpy, messages, numpy, opencv) and adds only what the distro lacks.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$repo/.venv}
python_bin=${PYTHON:-python3}
mode=wheels
[ -n "${ROS_DISTRO:-}" ] && mode="distro-$ROS_DISTRO"

say() { echo "[setup] $*"; }

# What the environment was built from; unchanged -> nothing to do.
fingerprint=$(cat "$repo"/requirements/*.txt "$repo/setup.py" "$repo/scripts/setup_env.sh" \
  "$repo/scripts/build_vision_msgs.sh" "$repo"/third_party/vision_msgs/msg/*.msg \
  | sha256sum | cut -c1-16)-$mode
stamp="$venv/.mtl_setup_done"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv ($mode)"
  venv_args=()
  [ "$mode" != wheels ] && venv_args+=(--system-site-packages)
  "$python_bin" -m venv "${venv_args[@]}" "$venv" || {
    echo "[setup] could not create a venv: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip

if [ "$mode" = wheels ]; then
  say "installing pinned Python libraries and the ROS 2 Kilted wheels"
  "$py" -m pip install --quiet -c "$repo/requirements/constraints.txt" \
    -r "$repo/requirements/python.txt" -r "$repo/requirements/ros-wheels.txt" -r "$repo/requirements/onnx.txt"
  "$repo/scripts/build_vision_msgs.sh" "$venv"
else
  say "using ROS 2 $ROS_DISTRO from the environment; adding torch, rosbags, tqdm, pytest"
  # Keep the distro's numpy: its message packages are compiled against it.
  system_numpy=$("$py" -c 'import numpy; print(numpy.__version__)')
  "$py" -m pip install --quiet "numpy==$system_numpy" -r "$repo/requirements/ros-distro.txt"
  "$py" -m pip install --quiet "numpy==$system_numpy" -r "$repo/requirements/onnx.txt" \
    || say "ONNX export (training.export.to_onnx) unavailable: onnx / onnxruntime do not install beside numpy $system_numpy"
  "$py" -c 'import vision_msgs.msg' 2>/dev/null || {
    echo "[setup] vision_msgs is missing from ROS $ROS_DISTRO: sudo apt-get install ros-$ROS_DISTRO-vision-msgs" >&2
    exit 1; }
fi

# The package itself, editable, so the console scripts (mtl_perception_node, ...) are on the
# venv's PATH and run the sources in this checkout.
"$py" -m pip install --quiet --no-deps --no-build-isolation -e "$repo" 2>/dev/null \
  || "$py" -m pip install --no-deps --no-build-isolation -e "$repo"

say "checking the environment"
"$py" - <<'PY'
import numpy, torch, cv2, yaml, rclpy, sensor_msgs.msg, vision_msgs.msg, visualization_msgs.msg, diagnostic_msgs.msg
print(f'[setup] ok: python {__import__("sys").version.split()[0]}, numpy {numpy.__version__}, '
      f'torch {torch.__version__} (cuda: {torch.cuda.is_available()}), opencv {cv2.__version__}, rclpy + vision_msgs')
PY
echo "$fingerprint" > "$stamp"
