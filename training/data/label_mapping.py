"""A2D2 labels -> training classes, as configured in config/a2d2/*.yaml.

- Semantic: A2D2 label PNGs hold exact colours; `class_list.json` names them ("#rrggbb" ->
  name, 55 entries). `semantic_classes.yaml` groups names into K training classes. The mapping
  is a 2**24-entry uint8 lookup table indexed by the packed colour (r << 16 | g << 8 | b), so a
  1920x1208 label maps in a few milliseconds; colours not in class_list.json and names not in
  any class become IGNORE_INDEX (255).
- Boxes: `box_classes.yaml` groups the 14 A2D2 3D-box classes into detection classes; classes
  not listed are dropped (id -1).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtl_perception_ros.core.labels import IGNORE_INDEX, LabelSet
from training.paths import A2D2_CONFIG_DIR

CONFIG_DIR = A2D2_CONFIG_DIR
DEFAULT_SEMANTIC_CLASSES = CONFIG_DIR / 'semantic_classes.yaml'
DEFAULT_BOX_CLASSES = CONFIG_DIR / 'box_classes.yaml'
DEFAULT_CLASS_LIST = CONFIG_DIR / 'class_list.json'

# The 14 classes of A2D2's label3D files (docs/a2d2_format.md).
A2D2_BOX_CLASSES = ('Car', 'Pedestrian', 'Truck', 'VanSUV', 'Cyclist', 'Bus', 'MotorBiker',
                    'Bicycle', 'UtilityVehicle', 'Motorcycle', 'CaravanTransporter', 'Animal',
                    'Trailer', 'EmergencyVehicle')
DROPPED = -1


def pack_rgb(image_rgb: np.ndarray) -> np.ndarray:
    """(H, W, >=3) uint8 RGB -> (H, W) uint32 r << 16 | g << 8 | b (alpha ignored)."""
    image = np.asarray(image_rgb)
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise ValueError(f'expected an (H, W, 3) uint8 colour image, got {image.shape} {image.dtype}')
    packed = image[..., 0].astype(np.uint32) << 16
    packed |= image[..., 1].astype(np.uint32) << 8
    packed |= image[..., 2]
    return packed


def parse_hex_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b)."""
    if not (isinstance(text, str) and len(text) == 7 and text[0] == '#'):
        raise ValueError(f'expected a colour "#rrggbb", got {text!r}')
    value = int(text[1:], 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


def load_class_list(path=DEFAULT_CLASS_LIST) -> dict[tuple[int, int, int], str]:
    """A2D2 class_list.json -> {(r, g, b): name}, in file order (= A2D2's index 0..54)."""
    path = Path(path)
    try:
        with open(path, encoding='utf-8') as stream:
            doc = json.load(stream)
        if not isinstance(doc, dict):
            raise ValueError('expected a JSON object {"#rrggbb": name}')
        return {parse_hex_color(color): str(name) for color, name in doc.items()}
    except (OSError, ValueError) as error:
        raise ValueError(f'{path}: cannot read the A2D2 class list ({error})') from None


def _load_yaml(path: Path) -> dict:
    import yaml
    try:
        with open(path, encoding='utf-8') as stream:
            doc = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f'{path}: cannot read the class grouping ({error})') from None
    if not isinstance(doc, dict) or not isinstance(doc.get('classes'), list):
        raise ValueError(f'{path}: expected a mapping with a `classes:` list')
    return doc


def _source_names(path: Path, label_set: LabelSet) -> dict[str, int]:
    """{A2D2 name: class id} from the `a2d2:` lists of a grouping YAML; a name may appear once."""
    source_to_class: dict[str, int] = {}
    for class_id, class_name in enumerate(label_set.names):
        sources = label_set.sources.get(class_name, {}).get('a2d2', [])
        if not isinstance(sources, list):
            raise ValueError(f'{path}: class {class_name!r}: `a2d2:` must be a list of A2D2 names')
        for source in sources:
            source = str(source)
            if source in source_to_class:
                other = label_set.names[source_to_class[source]]
                raise ValueError(f'{path}: A2D2 class {source!r} is listed under both {other!r} '
                                 f'and {class_name!r}')
            source_to_class[source] = class_id
    return source_to_class


@dataclass(frozen=True, eq=False)
class SemanticMapping:
    """A2D2 label colours -> training class ids (K classes, IGNORE_INDEX elsewhere)."""

    label_set: LabelSet
    color_to_name: dict          # {(r, g, b): A2D2 name}, the class_list.json in use
    source_to_class: dict        # {A2D2 name: training class id}
    lut: np.ndarray              # (2**24,) uint8, packed colour -> class id

    @classmethod
    def from_files(cls, semantic_classes=DEFAULT_SEMANTIC_CLASSES,
                   class_list=DEFAULT_CLASS_LIST) -> 'SemanticMapping':
        """Build from a grouping YAML and an A2D2 class_list.json; every name must exist."""
        semantic_classes = Path(semantic_classes)
        _load_yaml(semantic_classes)  # clear error for a missing or malformed file
        label_set = LabelSet.from_yaml(semantic_classes)
        color_to_name = load_class_list(class_list)
        source_to_class = _source_names(semantic_classes, label_set)
        known = set(color_to_name.values())
        unknown = sorted(set(source_to_class) - known)
        if unknown:
            raise ValueError(f'{semantic_classes}: A2D2 names {unknown} are not in {class_list}')
        lut = np.full(1 << 24, IGNORE_INDEX, dtype=np.uint8)
        for (r, g, b), name in color_to_name.items():
            if name in source_to_class:
                lut[(r << 16) | (g << 8) | b] = source_to_class[name]
        return cls(label_set, color_to_name, source_to_class, lut)

    def colors_to_classes(self, label_rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3 or 4) uint8 RGB(A) label image -> (H, W) uint8 class ids."""
        return self.lut[pack_rgb(label_rgb)]

    def to_dict(self) -> dict:
        """Label set plus the A2D2 names of each class (for manifests and checkpoints)."""
        values = self.label_set.to_dict()
        values['a2d2'] = [sorted(n for n, i in self.source_to_class.items() if i == class_id)
                          for class_id in range(len(self.label_set))]
        values['ignore_index'] = IGNORE_INDEX
        return values


@dataclass(frozen=True, eq=False)
class BoxClassMapping:
    """A2D2 3D-box class names -> detection class ids (DROPPED = -1 for unlisted classes)."""

    label_set: LabelSet
    source_to_class: dict        # {A2D2 box class: detection class id}

    @classmethod
    def from_yaml(cls, box_classes=DEFAULT_BOX_CLASSES) -> 'BoxClassMapping':
        """Build from a grouping YAML whose `a2d2:` names are A2D2's 14 box classes."""
        box_classes = Path(box_classes)
        _load_yaml(box_classes)
        label_set = LabelSet.from_yaml(box_classes)
        source_to_class = _source_names(box_classes, label_set)
        unknown = sorted(set(source_to_class) - set(A2D2_BOX_CLASSES))
        if unknown:
            raise ValueError(f'{box_classes}: {unknown} are not A2D2 box classes; '
                             f'expected names from {list(A2D2_BOX_CLASSES)}')
        return cls(label_set, source_to_class)

    def class_id(self, a2d2_class: str) -> int:
        """Detection class id of an A2D2 box class, DROPPED (-1) when not listed."""
        return self.source_to_class.get(a2d2_class, DROPPED)

    def to_dict(self) -> dict:
        values = self.label_set.to_dict()
        values['a2d2'] = [sorted(n for n, i in self.source_to_class.items() if i == class_id)
                          for class_id in range(len(self.label_set))]
        return values
