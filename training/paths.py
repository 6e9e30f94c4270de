"""Where the training tools find the repository's shared files (they run from the source tree)."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
A2D2_CONFIG_DIR = REPO_ROOT / 'config' / 'a2d2'          # class_list.json, cams_lidars.json, label sets
NODE_PARAMS_PATH = REPO_ROOT / 'config' / 'mtl_perception.yaml'
