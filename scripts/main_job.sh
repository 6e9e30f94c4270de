#!/usr/bin/env bash
# The main job (README: `make run`). Placeholder until the data/model/node issues fill it:
# checks that the environment can talk over DDS.
set -euo pipefail
venv=${1:-.venv}
"$venv/bin/python" - <<'PY'
import rclpy
from rclpy.node import Node
rclpy.init()
node = Node('mtl_perception_smoke_check')
print(f'[run] rclpy ok: node {node.get_fully_qualified_name()} on ROS_DOMAIN_ID {node.get_namespace()}')
node.destroy_node()
rclpy.shutdown()
PY
