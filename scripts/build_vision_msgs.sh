#!/usr/bin/env bash
# Build the vision_msgs interfaces into a virtual environment whose ROS 2 comes from the PyPI
# wheels (no ROS distro). Does nothing when `import vision_msgs.msg` already works (a sourced
# ROS install, or an earlier build).
#
#   scripts/build_vision_msgs.sh VENV_DIR
set -euo pipefail

venv=$(cd "${1:?usage: build_vision_msgs.sh VENV_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
python="$venv/bin/python"

if "$python" -c 'import vision_msgs.msg' 2>/dev/null; then
  exit 0
fi
echo "[vision_msgs] not importable: building it from third_party/vision_msgs into $venv"
start=$(date +%s)

"$python" -m pip install --quiet -c "$repo/requirements/constraints.txt" \
  -r "$repo/requirements/vision-msgs-build.txt"

# The wheels' exported CMake targets name the include dirs of the machine they were built on
# (/opt/python/cpXY-cpXY/...). CMake rejects a target whose include dir does not exist, so point
# them at this interpreter's headers and numpy's.
py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$python" -c 'import numpy; print(numpy.get_include())')
if [ ! -f "$py_include/Python.h" ]; then
  echo "[vision_msgs] Python headers are missing ($py_include/Python.h): install python3-dev" >&2
  exit 1
fi
for export_file in "$venv"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#$np_include#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_include#g" \
    "$export_file"
done

build_dir="$repo/third_party/vision_msgs/build"
rm -rf "$build_dir"
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
cmake -S "$repo/third_party/vision_msgs" -B "$build_dir" \
  -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$python" \
  -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > "$build_dir.log" 2>&1 \
  || { cat "$build_dir.log" >&2; echo "[vision_msgs] CMake configure failed (log above)" >&2; exit 1; }
cmake --build "$build_dir" --parallel "$(nproc)" >> "$build_dir.log" 2>&1 \
  || { tail -50 "$build_dir.log" >&2; echo "[vision_msgs] build failed (log: $build_dir.log)" >&2; exit 1; }
cmake --install "$build_dir" >> "$build_dir.log" 2>&1 \
  || { tail -50 "$build_dir.log" >&2; echo "[vision_msgs] install failed" >&2; exit 1; }

"$python" -c 'import vision_msgs.msg as m; m.Detection2DArray(); m.LabelInfo()' \
  || { echo "[vision_msgs] built, but the Python module does not import" >&2; exit 1; }
echo "[vision_msgs] built in $(( $(date +%s) - start )) s"
