"""The network's configuration, ModelConfig: torch-free, so that a process that only runs the ONNX
export (core.onnx_inference) reads it without importing torch. MultiTaskNet (core.model) builds
from it; checkpoints store it as a plain dict."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from mtl_perception_ros.core.bev_grid import BevGrid

POINT_GEOMETRY_CHANNELS = 9  # x, y, z, reflectance, dx/dy to pillar centre, dx/dy/dz to pillar mean
CAMERA_STRIDE = 4  # camera features (painted onto the points) are at 1/4 of the input image
SEMANTIC_STRIDES = (2, 4)  # sem_logits at 1/semantic_stride of the input image


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build MultiTaskNet; stored in checkpoints as a plain dict.

    Defaults fit a 2-core CPU budget (one forward pass ~ tens of ms); see `gpu_large()`.
    """

    num_det_classes: int = 4                   # C: heatmap channels (detection label set)
    num_sem_classes: int = 13                  # K: semantic classes (semantic label set)
    bev_grid: BevGrid = field(default_factory=BevGrid)
    image_hw: tuple[int, int] = (320, 512)     # model input size the camera_matrix is scaled to
    image_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)  # RGB, 0..255 units
    image_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    camera_channels: tuple[int, int, int, int] = (16, 32, 64, 96)  # encoder at 1/2, 1/4, 1/8, 1/16
    camera_blocks: tuple[int, int, int, int] = (1, 1, 2, 2)         # 3x3 convs per encoder stage
    camera_feature_channels: int = 32          # Dc: decoder width; sampled per point
    semantic_stride: int = 4                   # sem_logits at 1/4, or 1/2 (one more decoder level, for thin classes)
    camera_context: bool = False               # pyramid pooling (PSPNet) on the 1/16 features: whole-image context
    pillar_channels: int = 32                  # Cp: PointNet width = BEV canvas channels
    bev_channels: tuple[int, int, int] = (32, 64, 128)  # backbone at grid strides 2, 4, 8
    bev_blocks: tuple[int, int, int] = (1, 2, 3)
    neck_channels: int = 64
    head_channels: int = 32
    camera_dropout_p: float = 0.2              # training only: per-sample chance to hide the camera
    heatmap_bias_init: float = -2.19           # = -log((1 - 0.1) / 0.1): initial p ~ 0.1

    def __post_init__(self):
        rows, cols = self.bev_grid.shape
        stride = self.bev_grid.output_stride
        if stride not in (2, 4, 8):
            raise ValueError(f'ModelConfig: bev_grid.output_stride must be 2, 4 or 8, got {stride}')
        if rows % 8 or cols % 8:
            raise ValueError(f'ModelConfig: BEV input grid {rows}x{cols} must be divisible by 8 '
                             '(three stride-2 backbone stages)')
        if not 0.0 <= self.camera_dropout_p <= 1.0:
            raise ValueError(f'ModelConfig: camera_dropout_p must be in [0, 1], got {self.camera_dropout_p}')
        if len(self.camera_channels) != 4 or len(self.camera_blocks) != 4:
            raise ValueError('ModelConfig: camera_channels and camera_blocks need 4 entries (1/2 .. 1/16)')
        if len(self.bev_channels) != 3 or len(self.bev_blocks) != 3:
            raise ValueError('ModelConfig: bev_channels and bev_blocks need 3 entries (strides 2, 4, 8)')
        if min(self.camera_blocks + self.bev_blocks) < 1:
            raise ValueError('ModelConfig: every stage needs at least one block')
        if self.semantic_stride not in SEMANTIC_STRIDES:
            raise ValueError(f'ModelConfig: semantic_stride must be one of {SEMANTIC_STRIDES}, '
                             f'got {self.semantic_stride}')

    @classmethod
    def gpu_large(cls, **overrides) -> 'ModelConfig':
        """A wider network on a finer grid (0.2 m -> 320x320 input, 80x80 output) and 480x768 images."""
        values = dict(bev_grid=BevGrid(cell_m=0.2), image_hw=(480, 768),
                      camera_channels=(32, 64, 96, 128), camera_blocks=(1, 2, 3, 3),
                      camera_feature_channels=64, pillar_channels=64,
                      bev_channels=(64, 128, 256), bev_blocks=(2, 3, 3),
                      neck_channels=128, head_channels=64, camera_context=True)
        values.update(overrides)
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain-Python dict (nested `bev_grid` dict); inverse of `from_dict`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> 'ModelConfig':
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f'ModelConfig: unknown keys {sorted(unknown)}')
        kwargs = {}
        for key, value in values.items():
            if key == 'bev_grid':
                value = value if isinstance(value, BevGrid) else BevGrid.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    def with_grid(self, bev_grid: BevGrid) -> 'ModelConfig':
        return replace(self, bev_grid=bev_grid)
