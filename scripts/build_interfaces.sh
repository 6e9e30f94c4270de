#!/usr/bin/env bash
# Build the interface packages that have no PyPI wheel (third_party/vision_msgs, third_party/tf2_msgs)
# into a virtual environment whose ROS 2 comes from the PyPI wheels (no ROS distro). A package is
# skipped when `import <package>.msg` already works and the definitions installed in the venv are
# the ones in third_party/ (a sourced ROS install, or an earlier build).
#
#   scripts/build_interfaces.sh VENV_DIR [PACKAGE ...]     (default: every package in third_party/)
#
# Needs the build tools of requirements/ros-packages.txt in the venv (scripts/setup_env.sh
# installs them). Builds in VENV_DIR/build-interfaces/<package> (log: <package>.log beside it).
set -euo pipefail

venv=$(cd "${1:?usage: build_interfaces.sh VENV_DIR [PACKAGE ...]}" && pwd)
shift
repo=$(cd "$(dirname "$0")/.." && pwd)
python="$venv/bin/python"
packages=("$@")
[ ${#packages[@]} -gt 0 ] || packages=(vision_msgs tf2_msgs)     # tf2_msgs after: no dependency between them

say() { echo "[interfaces] $*"; }

# Up to date: importable, and each definition file in third_party/ installed unchanged.
up_to_date() {
  local package=$1 source_dir="$repo/third_party/$1" definition
  "$python" -c "import $package.msg" 2>/dev/null || return 1
  [ -d "$venv/share/$package" ] || return 0          # importable from elsewhere (a ROS install)
  for definition in "$source_dir"/{msg,srv,action}/*; do
    [ -f "$definition" ] || continue
    cmp -s "$definition" "$venv/share/$package/${definition#"$source_dir"/}" || return 1
  done
}

todo=()
for package in "${packages[@]}"; do
  [ -f "$repo/third_party/$package/package.xml" ] || { say "no such package: third_party/$package" >&2; exit 1; }
  up_to_date "$package" || todo+=("$package")
done
[ ${#todo[@]} -gt 0 ] || exit 0

if [ ! -f "$venv/share/ament_cmake/cmake/ament_cmakeConfig.cmake" ] \
   || [ ! -d "$venv/share/rosidl_default_generators" ]; then
  say "the build tools (ament_cmake, rosidl_default_generators) are missing from $venv: run scripts/setup_env.sh $venv" >&2
  exit 1
fi

# The wheels' exported CMake targets name the include dirs of the machine they were built on
# (/opt/python/cpXY-cpXY/...). CMake rejects a target whose include dir does not exist, so point
# them at this interpreter's headers and numpy's.
py_include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_include=$("$python" -c 'import numpy; print(numpy.get_include())')
if [ ! -f "$py_include/Python.h" ]; then
  say "Python headers are missing ($py_include/Python.h): install python3-dev" >&2
  exit 1
fi
fix_exported_include_dirs() {
  local export_file
  for export_file in "$venv"/share/*/cmake/export_*__rosidl_generator_pyExport.cmake; do
    [ -f "$export_file" ] || continue
    sed -i -E \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/(_core|core)/include#$np_include#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$py_include#g" \
      "$export_file"
  done
}
fix_exported_include_dirs

export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv"
for package in "${todo[@]}"; do
  say "$package: not importable or out of date: building it from third_party/$package into $venv"
  start=$(date +%s)
  build_dir="$venv/build-interfaces/$package"
  log="$build_dir.log"
  rm -rf "$build_dir"
  mkdir -p "$build_dir"
  cmake -S "$repo/third_party/$package" -B "$build_dir" \
    -DCMAKE_INSTALL_PREFIX="$venv" -DPython3_EXECUTABLE="$python" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF > "$log" 2>&1 \
    || { cat "$log" >&2; say "$package: CMake configure failed (log above)" >&2; exit 1; }
  cmake --build "$build_dir" --parallel "$(nproc)" >> "$log" 2>&1 \
    || { tail -50 "$log" >&2; say "$package: build failed (log: $log)" >&2; exit 1; }
  cmake --install "$build_dir" >> "$log" 2>&1 \
    || { tail -50 "$log" >&2; say "$package: install failed (log: $log)" >&2; exit 1; }
  "$python" -c "import $package.msg as m; [getattr(m, n)() for n in dir(m) if n[0].isupper()]" \
    || { say "$package: built, but its messages do not import (log: $log)" >&2; exit 1; }
  say "$package: built in $(( $(date +%s) - start )) s"
done

