"""The multi-task network: camera semantics + LiDAR/camera-fused BEV object detection.

```
image (B,3,Hi,Wi) 0..255 ─► normalise ─► CameraEncoder (1/2..1/16) ─► CameraDecoder (FPN, 1/4)
                                                                        │ features (B,Dc,Hi/4,Wi/4)
                         sem_logits (B,K,Hi/s,Wi/s) ◄── SemanticHead ◄──┤ (s = semantic_stride: 4, or 2
                                                                        │  with one more FPN level)
points (P,4) x y z refl ─► in-grid mask ─► pillar geometry              │
                              │   (offsets to pillar centre and mean)   │
                              └─► project (camera_matrix,               │
                                   vehicle_to_camera) ─► grid_sample ◄──┘
                                                          ─► (P,Dc) + no-camera flag
   [geometry | camera features | flag] ─► PillarEncoder (Linear+BN+ReLU, scatter-max)
                                       ─► BEV canvas (B,Cp,Hg,Wg)
                                       ─► BevBackbone (grid strides 2, 4, 8)
                                       ─► BevNeck (to the output stride)
                                       ─► DetectionHead ─► bbox_heatmap (B,C,H,W), bbox_reg (B,8,H,W)
```

The camera features are sampled with `F.grid_sample`, so the detection loss also trains the
image encoder ("shared signal"). Points that do not see the camera (outside the image, behind
it, camera missing or dropped out in training) get zero camera features and the flag set, so
the same network detects from LiDAR alone.

Several cameras per sample ("views", `view_sample` in `forward`): the camera branch runs on all
views of the batch at once (shared weights, so a model trained with one camera runs unchanged with
N), and each point takes the features of one view that sees it: of the views of its sample that
see it, the one where it lies nearest the image centre (normalised by the image half-size, so the
view that sees it most squarely, with the most image context around it). Points seen by none get
the no-camera flag, as before.

Conventions (mtl_perception_ros.core.camera, mtl_perception_ros.core.bev_grid): points in the vehicle
frame (x forward, y left, z up, metres; reflectance in [0, 1]); `vehicle_to_camera` maps into
the camera optical frame; a pixel (u, v) = (column, row) = K p / p.z; BEV rows run along +x,
columns along +y. `bbox_reg` channels: dx, dy (sub-cell offset of the centre in output cells),
z (m), log length, log width, log height (log m), sin yaw, cos yaw — raw, decoded by
mtl_perception_ros.core.box_coding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.box_coding import REG_DIM
from mtl_perception_ros.core.camera import MIN_DEPTH_M
from mtl_perception_ros.core.model_config import (  # noqa: F401 - part of this module's interface
    CAMERA_STRIDE, POINT_GEOMETRY_CHANNELS, SEMANTIC_STRIDES, ModelConfig)


class ConvBNReLU(nn.Sequential):
    """3x3 (or k x k) convolution, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True))


def conv_stage(in_channels: int, out_channels: int, blocks: int) -> nn.Sequential:
    """A stride-2 ConvBNReLU followed by `blocks - 1` stride-1 ones."""
    layers = [ConvBNReLU(in_channels, out_channels, stride=2)]
    layers += [ConvBNReLU(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


# ----------------------------------------------------------------------------- camera branch

class CameraEncoder(nn.Module):
    """Four stride-2 stages: image (B,3,Hi,Wi) -> feature maps at 1/2, 1/4, 1/8, 1/16."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = (3,) + tuple(cfg.camera_channels)
        self.stages = nn.ModuleList(conv_stage(widths[i], widths[i + 1], cfg.camera_blocks[i])
                                    for i in range(4))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = image
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features  # [(B,c0,Hi/2,Wi/2), (B,c1,Hi/4,Wi/4), (B,c2,Hi/8,Wi/8), (B,c3,Hi/16,Wi/16)]


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling: the map averaged over 1x1, 2x2 and 4x4 bins, each reduced by a 1x1
    conv, upsampled and concatenated to the input, fused by a 3x3 conv. Every pixel then sees the
    whole image: a large flat surface (a truck's side) is told from the sky by what surrounds it."""

    BINS = (1, 2, 4)

    def __init__(self, channels: int):
        super().__init__()
        reduced = max(channels // 4, 8)
        # no BatchNorm on the pooled maps: a 1 x 1 map of a batch of one has one value per channel
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(channels, reduced, 1), nn.ReLU(inplace=True))
                                      for _ in self.BINS)
        self.fuse = ConvBNReLU(channels + reduced * len(self.BINS), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(branch(adaptive_average(x, bins)), size=size, mode='bilinear',
                                align_corners=False) for branch, bins in zip(self.branches, self.BINS)]
        return self.fuse(torch.cat([x] + pooled, dim=1))


def _bin_matrix(size: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, size): row i averages input positions floor(i size / bins) .. ceil((i + 1) size / bins) - 1."""
    matrix = like.new_zeros(bins, size)
    for i in range(bins):
        start, end = (i * size) // bins, -(-(i + 1) * size // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_average(x: torch.Tensor, bins: int) -> torch.Tensor:
    """F.adaptive_avg_pool2d(x, bins) as two matrix products, which ONNX exports for any input size
    (its AveragePool needs the size to be a multiple of the bins: 30 x 48 at 1/16 of 480 x 768 is not)."""
    height, width = x.shape[-2:]
    return _bin_matrix(int(height), bins, x) @ x @ _bin_matrix(int(width), bins, x).t()


class CameraDecoder(nn.Module):
    """FPN-lite top-down path: 1/16 -> 1/8 -> 1/4, then one 3x3 smoothing conv (the painted
    features); with camera_context, pyramid pooling on the 1/16 map first."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        width = cfg.camera_feature_channels
        self.context = PyramidPooling(cfg.camera_channels[-1]) if cfg.camera_context else None
        self.laterals = nn.ModuleList(nn.Conv2d(c, width, 1) for c in cfg.camera_channels[1:])
        self.smooth = ConvBNReLU(width, width)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        features = features[1:]   # 1/4 .. 1/16
        deepest = features[-1] if self.context is None else self.context(features[-1])
        x = self.laterals[-1](deepest)
        for lateral, skip in zip(self.laterals[-2::-1], features[-2::-1]):
            x = lateral(skip) + F.interpolate(x, size=skip.shape[-2:], mode='bilinear', align_corners=False)
        return self.smooth(x)  # (B, Dc, Hi/4, Wi/4)


class SemanticHead(nn.Module):
    """Per-pixel class logits: from the 1/4 camera features, or (semantic_stride 2) from those
    upsampled to 1/2 plus a lateral of the encoder's 1/2 stage and a 3x3 conv: the full-detail
    level that poles, signs and distant people need."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        width = cfg.camera_feature_channels
        self.stride = cfg.semantic_stride
        if self.stride == 2:
            self.lateral = nn.Conv2d(cfg.camera_channels[0], width, 1)
            self.smooth = ConvBNReLU(width, width)
        self.classifier = nn.Conv2d(width, cfg.num_sem_classes, 1)

    def forward(self, camera_features: torch.Tensor, half_features: torch.Tensor | None = None) -> torch.Tensor:
        x = camera_features
        if self.stride == 2:
            x = self.smooth(self.lateral(half_features) + F.interpolate(
                x, size=half_features.shape[-2:], mode='bilinear', align_corners=False))
        return self.classifier(x)  # (B, K, Hi/s, Wi/s)


def project_to_grid_sample_coords(xyz: torch.Tensor, points_batch: torch.Tensor,
                                  camera_matrix: torch.Tensor, vehicle_to_camera: torch.Tensor,
                                  image_hw: tuple[int, int]):
    """Project vehicle-frame points into their sample's image, in grid_sample coordinates.

    xyz (P,3) m, points_batch (P,) sample index, camera_matrix (B,3,3) and vehicle_to_camera
    (B,4,4) for the input image of size `image_hw` = (Hi, Wi). Returns (grid_xy (P,2) in [-1, 1]
    for align_corners=False, visible (P,) bool: depth > 0.1 m and 0 <= u < Wi, 0 <= v < Hi).
    Invisible points get grid_xy = -2 (outside, never NaN/inf).
    """
    height, width = image_hw
    xyz = xyz.float()
    transform = vehicle_to_camera.float()[points_batch]                # (P,4,4)
    intrinsics = camera_matrix.float()[points_batch]                   # (P,3,3)
    with torch.autocast(xyz.device.type, enabled=False):  # pixels need fp32, also under AMP
        cam = (transform[:, :3, :3] @ xyz.unsqueeze(-1)).squeeze(-1) + transform[:, :3, 3]  # (P,3)
        uvw = (intrinsics @ cam.unsqueeze(-1)).squeeze(-1)             # (P,3)
    depth = cam[:, 2]
    in_front = depth > MIN_DEPTH_M
    uv = uvw[:, :2] / torch.where(in_front, depth, torch.ones_like(depth)).unsqueeze(-1)
    u, v = uv[:, 0], uv[:, 1]
    visible = in_front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    grid_xy = torch.stack(((u + 0.5) / width * 2 - 1, (v + 0.5) / height * 2 - 1), dim=-1)
    grid_xy = torch.where(visible.unsqueeze(-1), grid_xy, torch.full_like(grid_xy, -2.0))
    return grid_xy, visible


def choose_views(xyz: torch.Tensor, points_batch: torch.Tensor, view_sample: torch.Tensor,
                 camera_matrix: torch.Tensor, vehicle_to_camera: torch.Tensor, view_on: torch.Tensor,
                 image_hw: tuple[int, int]):
    """For each point, the view that paints it (module docstring: nearest the image centre).

    xyz (P,3), points_batch (P,) sample per point; view_sample (V,) sample per view, camera_matrix
    (V,3,3), vehicle_to_camera (V,4,4), view_on (V,) bool (False: a view not to use). Returns
    (view (P,) int64 index of the chosen view, 0 where none; grid_xy (P,2) in it as
    `project_to_grid_sample_coords` gives it; visible (P,) bool: some view sees the point).
    Vectorised over (point, view of its sample) pairs: P x views-per-sample work.
    """
    num_points, device = xyz.shape[0], xyz.device
    num_views = view_sample.shape[0]
    if num_points == 0 or num_views == 0:
        return (torch.zeros(num_points, dtype=torch.long, device=device), xyz.new_full((num_points, 2), -2.0),
                torch.zeros(num_points, dtype=torch.bool, device=device))
    batch_size = int(max(int(points_batch.max()), int(view_sample.max()))) + 1
    view_order = torch.argsort(view_sample, stable=True)                         # views grouped by sample
    views_of = torch.bincount(view_sample, minlength=batch_size)                 # (B,)
    first_view = torch.cumsum(views_of, 0) - views_of
    per_point = views_of[points_batch]                                           # (P,)
    pair_point = torch.repeat_interleave(torch.arange(num_points, device=device), per_point)
    pair_start = torch.cumsum(per_point, 0) - per_point
    within = torch.arange(pair_point.shape[0], device=device) - pair_start[pair_point]
    pair_view = view_order[first_view[points_batch[pair_point]] + within]
    grid_xy, visible = project_to_grid_sample_coords(xyz[pair_point], pair_view, camera_matrix,
                                                     vehicle_to_camera, image_hw)
    visible = visible & view_on[pair_view]
    off_centre = torch.where(visible, grid_xy.float().abs().amax(dim=-1), torch.full_like(grid_xy[:, 0], 3.0))
    max_views = int(views_of.max())
    table = off_centre.new_full((num_points, max_views), float('inf'))
    table[pair_point, within] = off_centre
    best = table.argmin(dim=1)                                                   # (P,)
    has_view = per_point > 0
    chosen = torch.where(has_view, pair_start + best, torch.zeros_like(best)).clamp(max=max(pair_point.shape[0] - 1, 0))
    seen = has_view & visible[chosen]
    view = torch.where(seen, pair_view[chosen], torch.zeros_like(best))
    point_grid = torch.where(seen.unsqueeze(-1), grid_xy[chosen], torch.full_like(grid_xy[chosen], -2.0))
    return view, point_grid, seen


def sample_per_point(feature_map: torch.Tensor, grid_xy: torch.Tensor,
                     points_batch: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample (B,D,h,w) features at each point's own sample: grid_xy (P,2) -> (P,D).

    Points are padded into one (B, 1, Pmax, 2) grid so a single grid_sample call serves the batch.
    """
    batch_size, channels = feature_map.shape[:2]
    num_points = grid_xy.shape[0]
    if num_points == 0:
        return feature_map.new_zeros(0, channels)
    order = torch.argsort(points_batch, stable=True)
    sorted_batch = points_batch[order]
    counts = torch.bincount(sorted_batch, minlength=batch_size)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(num_points, device=grid_xy.device) - starts[sorted_batch]  # index within sample
    padded = grid_xy.new_full((batch_size, int(counts.max()), 2), -2.0)
    padded[sorted_batch, slot] = grid_xy[order].to(padded.dtype)
    # fp32 even under AMP: a bf16 grid would be off by pixels
    sampled = F.grid_sample(feature_map.float(), padded.float().unsqueeze(1), mode='bilinear',
                            padding_mode='zeros', align_corners=False)  # (B, D, 1, Pmax)
    per_point_sorted = sampled[:, :, 0].transpose(1, 2)[sorted_batch, slot]  # (P, D)
    return torch.empty_like(per_point_sorted).index_copy(0, order, per_point_sorted)


# ----------------------------------------------------------------------------- LiDAR branch

def pillar_geometry(points: torch.Tensor, points_batch: torch.Tensor, grid: BevGrid,
                    batch_size: int):
    """Assign in-grid points to pillars and compute their geometric features.

    points (P,4) x, y, z, reflectance; returns (keep (P,) bool, cell (P_kept,) flat pillar index
    b*Hg*Wg + row*Wg + col, features (P_kept, 9): x, y, z, reflectance, x/y offset to the pillar
    centre, x/y/z offset to the mean of the pillar's points).
    """
    rows, cols = grid.shape
    xyz = points[:, :3]
    keep = ((xyz[:, 0] >= grid.x_min_m) & (xyz[:, 0] < grid.x_max_m)
            & (xyz[:, 1] >= grid.y_min_m) & (xyz[:, 1] < grid.y_max_m)
            & (xyz[:, 2] >= grid.z_min_m) & (xyz[:, 2] < grid.z_max_m)
            & (points_batch >= 0) & (points_batch < batch_size))
    points = points[keep]
    batch = points_batch[keep]
    row_f, col_f = grid.xy_to_cell(points[:, 0], points[:, 1], cell_m=grid.cell_m)
    row = row_f.floor().long().clamp_(0, rows - 1)  # clamp: float rounding just below x_max
    col = col_f.floor().long().clamp_(0, cols - 1)
    cell = (batch * rows + row) * cols + col
    centre_x, centre_y = grid.cell_to_xy(row.to(points.dtype) + 0.5, col.to(points.dtype) + 0.5,
                                         cell_m=grid.cell_m)
    num_cells = batch_size * rows * cols
    sums = points.new_zeros(num_cells, 3).index_add_(0, cell, points[:, :3])
    counts = points.new_zeros(num_cells).index_add_(0, cell, torch.ones_like(points[:, 0]))
    mean = sums[cell] / counts[cell].unsqueeze(-1)
    features = torch.cat([points[:, :4],
                          (points[:, 0] - centre_x).unsqueeze(-1), (points[:, 1] - centre_y).unsqueeze(-1),
                          points[:, :3] - mean], dim=-1)  # (P_kept, 9)
    return keep, cell, features


class PillarEncoder(nn.Module):
    """PointNet on pillars: per-point Linear+BN+ReLU, then max over each pillar's points."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels)

    def forward(self, point_features: torch.Tensor, cell: torch.Tensor, num_cells: int) -> torch.Tensor:
        """point_features (P,F), cell (P,) -> canvas (num_cells, Cp); empty pillars are 0."""
        channels = self.linear.out_features
        if point_features.shape[0] == 0:  # nothing in range; BatchNorm cannot run on 0 rows
            return point_features.new_zeros(num_cells, channels)
        x = F.relu(self.norm(self.linear(point_features)))  # (P, Cp), >= 0
        # Max over the occupied pillars only, then placed on the canvas: the backward of a
        # scatter-max is dense in its output, so reducing onto all num_cells cells (mostly
        # empty) cost a third of a CPU training step.
        occupied, pillar = torch.unique(cell, return_inverse=True)
        pillars = x.new_zeros(occupied.shape[0], channels).scatter_reduce_(
            0, pillar.unsqueeze(-1).expand(-1, channels), x, 'amax', include_self=False)
        # in place: index_copy would clone the (mostly empty) canvas first, 8 MB at 256 x 256 x 32
        return x.new_zeros(num_cells, channels).index_copy_(0, occupied, pillars)


class BevBackbone(nn.Module):
    """Three stride-2 stages over the pillar canvas: outputs at grid strides 2, 4, 8."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        widths = (cfg.pillar_channels,) + tuple(cfg.bev_channels)
        self.stages = nn.ModuleList(conv_stage(widths[i], widths[i + 1], cfg.bev_blocks[i])
                                    for i in range(3))

    def forward(self, canvas: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        x = canvas
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs  # [(B,c1,Hg/2,Wg/2), (B,c2,Hg/4,Wg/4), (B,c3,Hg/8,Wg/8)]


class BevNeck(nn.Module):
    """Brings every backbone stage to the output stride (avg-pool down / bilinear up), sums, fuses."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.output_stride = cfg.bev_grid.output_stride
        self.stage_strides = (2, 4, 8)
        self.laterals = nn.ModuleList(nn.Conv2d(c, cfg.neck_channels, 1) for c in cfg.bev_channels)
        self.fuse = ConvBNReLU(cfg.neck_channels, cfg.neck_channels)

    def forward(self, stages: list[torch.Tensor], output_hw: tuple[int, int]) -> torch.Tensor:
        fused = 0
        for lateral, x, stride in zip(self.laterals, stages, self.stage_strides):
            if stride < self.output_stride:  # pool first: the 1x1 conv is cheaper on the small map
                factor = self.output_stride // stride
                fused = fused + lateral(F.avg_pool2d(x, factor))
            elif stride > self.output_stride:
                fused = fused + F.interpolate(lateral(x), size=output_hw, mode='bilinear',
                                              align_corners=False)
            else:
                fused = fused + lateral(x)
        return self.fuse(F.relu(fused))  # (B, N, H, W)


class DetectionHead(nn.Module):
    """CenterPoint-style heads: a heatmap of object centres per class and 8 box parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heatmap = nn.Sequential(ConvBNReLU(cfg.neck_channels, cfg.head_channels),
                                     nn.Conv2d(cfg.head_channels, cfg.num_det_classes, 1))
        self.regression = nn.Sequential(ConvBNReLU(cfg.neck_channels, cfg.head_channels),
                                        nn.Conv2d(cfg.head_channels, REG_DIM, 1))
        nn.init.constant_(self.heatmap[-1].bias, cfg.heatmap_bias_init)

    def forward(self, bev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heatmap(bev), self.regression(bev)  # (B,C,H,W), (B,8,H,W)


# ----------------------------------------------------------------------------- the network

class MultiTaskNet(nn.Module):
    """Camera semantics + camera-painted pillar BEV detection (see the module diagram)."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.register_buffer('image_mean', torch.tensor(cfg.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('image_std', torch.tensor(cfg.image_std).view(1, 3, 1, 1), persistent=False)
        self.camera_encoder = CameraEncoder(cfg)
        self.camera_decoder = CameraDecoder(cfg)
        self.semantic_head = SemanticHead(cfg)
        point_channels = POINT_GEOMETRY_CHANNELS + cfg.camera_feature_channels + 1  # + no-camera flag
        self.pillar_encoder = PillarEncoder(point_channels, cfg.pillar_channels)
        self.bev_backbone = BevBackbone(cfg)
        self.bev_neck = BevNeck(cfg)
        self.detection_head = DetectionHead(cfg)

    def forward(self, points: torch.Tensor, points_batch: torch.Tensor, image: torch.Tensor | None = None,
                camera_matrix: torch.Tensor | None = None, vehicle_to_camera: torch.Tensor | None = None,
                camera_valid: torch.Tensor | None = None, batch_size: int | None = None,
                view_sample: torch.Tensor | None = None, branches=None) -> dict:
        """Run both tasks on a batch.

        points (P,4) float x, y, z (m, vehicle frame), reflectance [0, 1], all samples concatenated;
        points_batch (P,) int64 sample index. Points outside the BEV grid (x, y or z) are dropped.
        image (B,3,Hi,Wi) RGB, uint8 or float with values 0..255 (normalised here); camera_matrix
        (B,3,3) for that image size; vehicle_to_camera (B,4,4) into the optical frame.
        camera_valid (B,) bool: False = no camera for that sample -> LiDAR-only detection (its
        sem_logits are still computed from the image). image=None: LiDAR-only for all samples and
        sem_logits are zeros of size ceil(cfg.image_hw / cfg.semantic_stride); `batch_size` (or camera_valid) gives B.
        In training mode each sample's camera is also hidden with probability cfg.camera_dropout_p.

        Several cameras per sample: view_sample (V,) int64 = the sample of each image, which are then
        V views: image (V,3,Hi,Wi), camera_matrix (V,3,3), vehicle_to_camera (V,4,4), camera_valid
        (V,) per view, sem_logits (V,...) per view; `batch_size` gives B (default: the largest sample
        index of points_batch and view_sample + 1). Each point is painted by one view (module
        docstring). view_sample=None: one view per sample (V = B, view b of sample b).

        branches: what runs camera_branch and bev_branch (mtl_perception_ros.core.inference_backends:
        ONNX Runtime, TensorRT); None = this module's own.

        Returns dict: bbox_heatmap (B,C,H,W) logits, bbox_reg (B,8,H,W), sem_logits (B or V,K,Hi/s,Wi/s)
        logits, with (H, W) = cfg.bev_grid.output_shape.
        """
        cfg = self.cfg
        if points.dim() != 2 or points.shape[1] < 4:
            raise ValueError('MultiTaskNet: points must be (P, 4) x, y, z, reflectance; '
                             f'got {tuple(points.shape)}')
        if points_batch.shape != points.shape[:1]:
            raise ValueError(f'MultiTaskNet: points_batch must be ({points.shape[0]},), '
                             f'got {tuple(points_batch.shape)}')
        device = points.device
        if view_sample is not None:
            view_sample = view_sample.to(device=device, dtype=torch.long)
            if image is None or view_sample.shape != image.shape[:1]:
                raise ValueError(f'MultiTaskNet: view_sample must be (V,) for an image (V, 3, H, W), got '
                                 f'{tuple(view_sample.shape)} and {None if image is None else tuple(image.shape)}')
            if batch_size is None:
                batch_size = max(int(points_batch.max()) + 1 if points_batch.numel() else 1,
                                 int(view_sample.max()) + 1 if view_sample.numel() else 1)
        else:
            batch_size = self._batch_size(points_batch, image, camera_valid, batch_size)
        num_views = int(image.shape[0]) if image is not None else batch_size
        points = points[:, :4].float()
        points_batch = points_batch.long()

        # camera branch -> (B, Dc, Hi/4, Wi/4) features and semantic logits
        if image is not None:
            if image.dim() != 4 or image.shape[1] != 3:
                raise ValueError(f'MultiTaskNet: image must be (B, 3, H, W), got {tuple(image.shape)}')
            if camera_matrix is None or vehicle_to_camera is None:
                raise ValueError('MultiTaskNet: an image needs camera_matrix (B,3,3) and '
                                 'vehicle_to_camera (B,4,4)')
            if camera_matrix.shape != (num_views, 3, 3) or vehicle_to_camera.shape != (num_views, 4, 4):
                raise ValueError(f'MultiTaskNet: expected camera_matrix ({num_views}, 3, 3) and '
                                 f'vehicle_to_camera ({num_views}, 4, 4), got {tuple(camera_matrix.shape)} '
                                 f'and {tuple(vehicle_to_camera.shape)}')
            camera_features, sem_logits = (branches or self).camera_branch(image)
            image_hw = tuple(image.shape[-2:])
        else:
            camera_features, image_hw = None, None
            h, w = (-(-s // cfg.semantic_stride) for s in cfg.image_hw)  # ceil, as the strided convs
            sem_logits = points.new_zeros(batch_size, cfg.num_sem_classes, h, w)

        # which views may be used
        camera_on = torch.ones(num_views, dtype=torch.bool, device=device)
        if camera_valid is not None:
            camera_on = camera_on & camera_valid.to(device=device, dtype=torch.bool)
        if self.training and cfg.camera_dropout_p > 0:
            camera_on = camera_on & (torch.rand(num_views, device=device) >= cfg.camera_dropout_p)

        canvas = self.lidar_canvas(points, points_batch, batch_size, camera_features, camera_on,
                                   camera_matrix, vehicle_to_camera, image_hw, view_sample)
        bbox_heatmap, bbox_reg = (branches or self).bev_branch(canvas)
        return {'bbox_heatmap': bbox_heatmap, 'bbox_reg': bbox_reg, 'sem_logits': sem_logits}

    # The three stages of forward(). The dense ones (camera_branch, bev_branch) have fixed shapes
    # and are what training.export.to_onnx exports; lidar_canvas has data-dependent shapes (points
    # in range, pillars) and stays in torch, as in PointPillars deployments.
    def camera_branch(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image (B,3,Hi,Wi) 0..255 -> camera features (B,Dc,Hi/4,Wi/4), sem_logits (B,K,Hi/s,Wi/s)."""
        normalised = (image.float() - self.image_mean) / self.image_std
        encoded = self.camera_encoder(normalised)
        camera_features = self.camera_decoder(encoded)
        return camera_features, self.semantic_head(camera_features, encoded[0])

    def lidar_canvas(self, points: torch.Tensor, points_batch: torch.Tensor, batch_size: int,
                     camera_features: torch.Tensor | None, camera_on: torch.Tensor,
                     camera_matrix: torch.Tensor | None, vehicle_to_camera: torch.Tensor | None,
                     image_hw: tuple[int, int] | None, view_sample: torch.Tensor | None = None) -> torch.Tensor:
        """Camera-painted pillars: points (P,4) float, points_batch (P,) int64 -> canvas (B,Cp,Hg,Wg).

        camera_features None (no image) or camera_on[view] False: LiDAR-only for those views.
        view_sample (V,): the sample of each view (None: view b of sample b, one per sample).
        """
        cfg = self.cfg
        keep, cell, geometry = pillar_geometry(points, points_batch, cfg.bev_grid, batch_size)
        kept_batch = points_batch[keep]
        if camera_features is not None:
            if view_sample is None:
                grid_xy, visible = project_to_grid_sample_coords(geometry[:, :3], kept_batch, camera_matrix,
                                                                 vehicle_to_camera, image_hw)
                visible = visible & camera_on[kept_batch]
                point_view = kept_batch
            else:
                point_view, grid_xy, visible = choose_views(geometry[:, :3], kept_batch, view_sample, camera_matrix,
                                                            vehicle_to_camera, camera_on, image_hw)
            point_camera = sample_per_point(camera_features, grid_xy, point_view)   # (P_kept, Dc)
            point_camera = point_camera * visible.unsqueeze(-1).to(point_camera.dtype)
        else:
            visible = torch.zeros_like(kept_batch, dtype=torch.bool)
            point_camera = geometry.new_zeros(geometry.shape[0], cfg.camera_feature_channels)
        no_camera = (~visible).to(geometry.dtype).unsqueeze(-1)
        point_features = torch.cat([geometry, point_camera.to(geometry.dtype), no_camera], dim=-1)

        rows, cols = cfg.bev_grid.shape
        canvas = self.pillar_encoder(point_features, cell, batch_size * rows * cols)  # (B*Hg*Wg, Cp)
        return canvas.view(batch_size, rows, cols, -1).permute(0, 3, 1, 2)          # (B, Cp, Hg, Wg)

    def bev_branch(self, canvas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """canvas (B,Cp,Hg,Wg) -> bbox_heatmap (B,C,H,W) logits, bbox_reg (B,8,H,W)."""
        bev = self.bev_neck(self.bev_backbone(canvas), self.cfg.bev_grid.output_shape)  # (B, N, H, W)
        return self.detection_head(bev)

    @staticmethod
    def _batch_size(points_batch, image, camera_valid, batch_size) -> int:
        if image is not None:
            return int(image.shape[0])
        if camera_valid is not None:
            return int(camera_valid.shape[0])
        if batch_size is not None:
            return int(batch_size)
        return int(points_batch.max()) + 1 if points_batch.numel() else 1


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> nn.Module:
    """For inference: each BatchNorm that follows a convolution (ConvBNReLU) or the pillar
    encoder's Linear is folded into that layer's weight and bias and replaced by an Identity. The
    same function in eval mode up to rounding, without the normalisation pass over every feature
    map (a tenth of a CPU forward). In place; returns `model`, which must not be trained after."""
    def fold(layer: nn.Module, norm: nn.modules.batchnorm._BatchNorm) -> None:
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)                   # (C_out,)
        bias = norm.bias - norm.running_mean * scale
        if layer.bias is not None:
            bias = bias + layer.bias * scale
        layer.weight.mul_(scale.view(-1, *([1] * (layer.weight.dim() - 1))))
        layer.bias = nn.Parameter(bias)

    for module in model.modules():
        if isinstance(module, ConvBNReLU) and isinstance(module[1], nn.BatchNorm2d):
            fold(module[0], module[1])
            module[1] = nn.Identity()
        elif isinstance(module, PillarEncoder) and isinstance(module.norm, nn.BatchNorm1d):
            fold(module.linear, module.norm)
            module.norm = nn.Identity()
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_summary(model: MultiTaskNet) -> dict[str, int]:
    """Parameter count per top-level part, plus 'total'."""
    summary = {name: count_parameters(child) for name, child in model.named_children()}
    summary['total'] = count_parameters(model)
    return summary


__all__ = ['ModelConfig', 'MultiTaskNet', 'CAMERA_STRIDE', 'parameter_summary',
           'project_to_grid_sample_coords', 'sample_per_point', 'pillar_geometry']


@torch.no_grad()
def folded_pillar_weights(pillar_encoder: PillarEncoder) -> tuple:
    """The pillar encoder's per-point Linear and eval-mode BatchNorm as one affine map, for the
    torch-free canvas (core.lidar_canvas_np): numpy float32 weight (F, Cp) and bias (Cp,) with
    relu(features @ weight + bias) = the encoder's per-point output. Folded in float64; also takes
    an encoder that fold_batch_norms already folded (norm an Identity, the Linear with a bias)."""
    linear, norm = pillar_encoder.linear, pillar_encoder.norm
    weight = linear.weight.detach().double().t()                                    # (F, Cp)
    bias = linear.bias.detach().double() if linear.bias is not None else weight.new_zeros(weight.shape[1])
    if isinstance(norm, nn.BatchNorm1d):
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)   # (Cp,)
        weight = weight * scale
        bias = norm.bias.double() + (bias - norm.running_mean.double()) * scale
    elif not isinstance(norm, nn.Identity):
        raise TypeError(f'folded_pillar_weights: expected the pillar norm to be BatchNorm1d or Identity, '
                        f'got {type(norm).__name__}')
    return weight.float().cpu().numpy(), bias.float().cpu().numpy()
