"""Debug pictures of one sample of a batch: what the network should see vs what it sees.

Top row (BEV, forward up, left left): GT heatmap with GT boxes | predicted heatmap with the
decoded boxes (white-edged) | difference predicted - GT (red: predicted but not there, blue:
there but missed; brightness = size of the difference).
Bottom row (camera): GT semantics | predicted semantics | prediction blended on the image.
"""
from __future__ import annotations

import numpy as np
import torch

from mtl_perception_ros.core.bev_grid import BevGrid
from mtl_perception_ros.core.decode import decode_detections
from mtl_perception_ros.core.labels import LabelSet
from training.pictures.draw import add_title, draw_bev, semantic_overlay, side_by_side, stacked


def difference_picture(predicted: np.ndarray, target: np.ndarray, pixels_per_cell: int = 8) -> np.ndarray:
    """(C, H, W) predicted and target heatmaps in [0, 1] -> BEV RGB picture of their difference.

    Per cell the class with the largest |predicted - target| decides: red = predicted too high,
    blue = too low. Same orientation as training.pictures.draw.heatmap_picture (forward up, left left).
    """
    diff = np.asarray(predicted, np.float32) - np.asarray(target, np.float32)
    if diff.ndim == 2:
        diff = diff[None]
    pick = np.abs(diff).argmax(axis=0)
    signed = np.take_along_axis(diff, pick[None], axis=0)[0][::-1, ::-1]
    picture = np.zeros(signed.shape + (3,), np.uint8)
    picture[..., 0] = (np.clip(signed, 0, 1) * 255 + 0.5).astype(np.uint8)
    picture[..., 2] = (np.clip(-signed, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.repeat(np.repeat(picture, pixels_per_cell, axis=0), pixels_per_cell, axis=1)


def _enlarge(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (class maps keep hard edges)."""
    return image if factor == 1 else np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def debug_picture(batch: dict, outputs: dict, grid: BevGrid, detection_labels: LabelSet,
                  semantic_labels: LabelSet, index: int = 0, score_threshold: float = 0.3,
                  pixels_per_cell: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB picture of sample `index` (layout in the module doc).

    `batch`: a collated batch (training.data.dataset.collate_samples); `outputs`: the model's dict.
    """
    from training.evaluation.evaluate import semantic_prediction

    with torch.no_grad():
        heatmap_logits = outputs['bbox_heatmap'][index:index + 1].detach().float().contiguous()
        predicted = torch.sigmoid(heatmap_logits)[0].cpu().numpy()
        detections = decode_detections(heatmap_logits, outputs['bbox_reg'][index:index + 1].detach().float().contiguous(),
                                       grid, score_threshold=score_threshold)[0]
        view = int(batch['first_view'][index])   # the sample's first camera
        class_map = batch['class_map'][view].cpu().numpy().astype(np.uint8)
        predicted_classes = semantic_prediction(outputs['sem_logits'][view:view + 1].detach(),
                                                class_map.shape)[0].cpu().numpy()
    target = batch['heatmap'][index].cpu().numpy()
    gt_boxes = batch['gt_boxes'][index].cpu().numpy()
    gt_classes = batch['gt_classes'][index].cpu().numpy()
    image = batch['image'][view].permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    points = batch['points'][batch['points_batch'] == index].cpu().numpy()
    if pixels_per_cell is None:   # about 512 pixels across the BEV
        pixels_per_cell = max(1, 512 // max(grid.output_shape))
    colors = detection_labels.colors
    bev_row = side_by_side([
        add_title(draw_bev(target, gt_boxes, gt_classes, grid, colors, points=points,
                           pixels_per_cell=pixels_per_cell), 'GT heatmap + boxes'),
        add_title(draw_bev(predicted, gt_boxes[:0], gt_classes[:0], grid, colors,
                           pred_boxes=detections.boxes, pred_classes=detections.classes,
                           pixels_per_cell=pixels_per_cell), f'predicted ({len(detections)} boxes)'),
        add_title(difference_picture(predicted, target, pixels_per_cell), 'predicted - GT'),
    ])
    # camera pictures at about the BEV pictures' width, so both rows' titles come out the same size
    scale = max(1, int(round(grid.output_shape[1] * pixels_per_cell / class_map.shape[1])))
    camera_row = side_by_side([
        add_title(_enlarge(semantic_labels.colorize(class_map), scale), 'GT semantics'),
        add_title(_enlarge(semantic_labels.colorize(predicted_classes), scale), 'predicted semantics'),
        add_title(_enlarge(semantic_overlay(image, predicted_classes, semantic_labels), scale),
                  'prediction on image'),
    ])
    return stacked([bev_row, camera_row])
