#!/usr/bin/env bash
# Create or update the project's virtual environment; idempotent and quick when nothing changed.
#
#   scripts/setup_env.sh [VENV_DIR]                         (default .venv; `make setup` calls this)
#   ROS_WHEELS=jazzy scripts/setup_env.sh .venv-jazzy       (the ROS 2 Jazzy wheels instead of Kilted)
#
# Without ROS (ROS_DISTRO unset): pinned Python libraries + the ROS 2 wheels of ROS_WHEELS (kilted
# unless set) from PyPI, and vision_msgs and tf2_msgs built from third_party/ into the venv.
# With a sourced ROS 2 (ROS_DISTRO set): the venv sees the distro's packages
# (--system-site-packages: rclpy, messages, numpy, opencv) and adds only what the distro lacks.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$repo/.venv}
python_bin=${PYTHON:-python3}
ros_wheels=${ROS_WHEELS:-kilted}
mode=wheels-$ros_wheels
[ -n "${ROS_DISTRO:-}" ] && mode="distro-$ROS_DISTRO"
interface_packages=(vision_msgs tf2_msgs)     # built from third_party/ where no wheel or distro has them

say() { echo "[setup] $*"; }

# What the environment was built from; unchanged -> nothing to do.
fingerprint=$(cat "$repo"/requirements/*.txt "$repo/setup.py" "$repo"/scripts/{setup_env.sh,build_interfaces.sh,ros_pins.py} \
  "$repo"/third_party/*/{CMakeLists.txt,package.xml} "$repo"/third_party/*/msg/* "$repo"/third_party/*/srv/* \
  "$repo"/third_party/*/action/* | sha256sum | cut -c1-16)-$mode
stamp="$venv/.mtl_setup_done"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fingerprint" ]; then
  exit 0
fi
if [ -f "$stamp" ] && [ "${mode%%-*}" = wheels ]; then
  built_for=$(sed -E 's/^[0-9a-f]+-//; s/^wheels$/wheels-kilted/' "$stamp")
  if [ "${built_for%%-*}" = wheels ] && [ "$built_for" != "$mode" ]; then
    # Switching the wheels' distro in place would keep interface packages built against the other.
    echo "[setup] $venv holds the ${built_for#wheels-} wheels, not $ros_wheels: use another directory" \
      "(e.g. ROS_WHEELS=$ros_wheels scripts/setup_env.sh .venv-$ros_wheels) or remove $venv" >&2
    exit 1
  fi
fi
if [ "$mode" = "wheels-$ros_wheels" ] && [ ! -f "$repo/requirements/constraints-ros-$ros_wheels.txt" ]; then
  echo "[setup] ROS_WHEELS=$ros_wheels: no pins for these wheels (requirements/constraints-ros-$ros_wheels.txt);" \
    "use one of: $(cd "$repo/requirements" && ls constraints-ros-*.txt | sed -E 's/constraints-ros-(.*)\.txt/\1/' | xargs)," \
    "or generate them: python3 scripts/ros_pins.py generate $ros_wheels" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv ($mode)"
  venv_args=()
  [ -n "${ROS_DISTRO:-}" ] && venv_args+=(--system-site-packages)
  "$python_bin" -m venv "${venv_args[@]}" "$venv" || {
    echo "[setup] could not create a venv: install python3-venv (apt-get install python3-venv)" >&2; exit 1; }
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --upgrade pip

if [ -z "${ROS_DISTRO:-}" ]; then
  say "installing pinned Python libraries and the ROS 2 ${ros_wheels^} wheels"
  # One list of ROS packages (requirements/ros-packages.txt), pinned per distro; only the ones
  # this distro releases (ros_pins.py requirements).
  mapfile -t ros_packages < <("$py" "$repo/scripts/ros_pins.py" requirements "$ros_wheels")
  "$py" -m pip install --quiet -c "$repo/requirements/constraints.txt" \
    -c "$repo/requirements/constraints-ros-$ros_wheels.txt" \
    -r "$repo/requirements/python.txt" -r "$repo/requirements/onnx.txt" "${ros_packages[@]}"
  "$repo/scripts/build_interfaces.sh" "$venv" "${interface_packages[@]}"
else
  say "using ROS 2 $ROS_DISTRO from the environment; adding torch, rosbags, tqdm, pytest"
  # Keep the distro's numpy: its message packages are compiled against it.
  system_numpy=$("$py" -c 'import numpy; print(numpy.__version__)')
  "$py" -m pip install --quiet "numpy==$system_numpy" -r "$repo/requirements/ros-distro.txt"
  "$py" -m pip install --quiet "numpy==$system_numpy" -r "$repo/requirements/onnx.txt" \
    || say "ONNX export (training.export.to_onnx) unavailable: onnx / onnxruntime do not install beside numpy $system_numpy"
  missing=()
  for package in "${interface_packages[@]}"; do
    "$py" -c "import $package.msg" 2>/dev/null || missing+=("ros-$ROS_DISTRO-${package//_/-}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "[setup] missing from ROS $ROS_DISTRO: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi

# The package itself, editable, so the console scripts (mtl_perception_node, ...) are on the
# venv's PATH and run the sources in this checkout.
"$py" -m pip install --quiet --no-deps --no-build-isolation -e "$repo" 2>/dev/null \
  || "$py" -m pip install --no-deps --no-build-isolation -e "$repo"

say "checking the environment"
"$py" - "$mode" <<'PY'
import sys, numpy, torch, cv2, yaml, rclpy, sensor_msgs.msg, visualization_msgs.msg, diagnostic_msgs.msg
import vision_msgs.msg, tf2_msgs.msg
tf2_msgs.msg.TFMessage(), vision_msgs.msg.Detection3DArray()
print(f'[setup] ok ({sys.argv[1]}): python {sys.version.split()[0]}, numpy {numpy.__version__}, '
      f'torch {torch.__version__} (cuda: {torch.cuda.is_available()}), opencv {cv2.__version__}, '
      f'rclpy, vision_msgs, tf2_msgs')
PY
echo "$fingerprint" > "$stamp"
