"""Losses on hand-made cases whose answers are worked out on paper."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.engine.losses import (MultiTaskLoss, UncertaintyWeighting, gather_at_centres, heatmap_focal_loss,
                                    regression_l1_loss, semantic_class_weights, semantic_cross_entropy)

LOG2 = math.log(2.0)


def one_pixel(value: float) -> torch.Tensor:
    return torch.tensor(value).view(1, 1, 1, 1)


def test_focal_loss_on_one_positive_pixel():
    # p = sigmoid(0) = 0.5 at a centre: -(1 - p)^2 log p = 0.25 ln 2, one object.
    loss = heatmap_focal_loss(one_pixel(0.0), one_pixel(1.0))
    assert loss.item() == pytest.approx(0.25 * LOG2, rel=1e-6)


def test_focal_loss_on_one_negative_pixel_near_a_centre():
    # y = 0.5, p = 0.5: -(1 - y)^4 p^2 log(1 - p) = 0.0625 * 0.25 * ln 2; no object -> divide by 1.
    loss = heatmap_focal_loss(one_pixel(0.0), one_pixel(0.5))
    assert loss.item() == pytest.approx(LOG2 / 64, rel=1e-6)


def test_focal_loss_sums_pixels_and_divides_by_the_number_of_objects():
    # Two centres with p = 0.75 (logit ln 3): each 0.25^2 * -ln 0.75; two background pixels at p = 0.5,
    # y = 0: each 0.25 ln 2. Total / 2 objects.
    logits = torch.tensor([math.log(3.0), math.log(3.0), 0.0, 0.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    expected = (2 * 0.0625 * -math.log(0.75) + 2 * 0.25 * LOG2) / 2
    assert heatmap_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)


def test_focal_loss_clamps_confident_mistakes():
    # p = sigmoid(100) clamps to 1 - 1e-4 on a background pixel: -(1 - 1e-4)^2 ln(1e-4).
    loss = heatmap_focal_loss(one_pixel(100.0), one_pixel(0.0))
    assert loss.item() == pytest.approx((1 - 1e-4) ** 2 * -math.log(1e-4), rel=1e-4)
    assert math.isfinite(heatmap_focal_loss(one_pixel(-100.0), one_pixel(1.0)).item())


def test_l1_at_object_centres():
    # 2 x 2 output, channel k holds k at cell (1, 0) = flat 2 and 2k at cell (1, 1) = flat 3.
    reg = torch.zeros(1, 8, 2, 2)
    reg[0, :, 1, 0] = torch.arange(8.0)
    reg[0, :, 1, 1] = 2 * torch.arange(8.0)
    assert gather_at_centres(reg, torch.tensor([[2, 3]]))[0, 1].tolist() == (2 * torch.arange(8.0)).tolist()
    target = torch.zeros(1, 3, 8)
    target[0, 1] = 2 * torch.arange(8.0) + torch.tensor([1.0, 0, 0, 0, 0, 0, 0, -3.0])  # error 1 + 3 = 4
    target[0, 2] = float('nan')                                # an empty slot with junk in it
    ind = torch.tensor([[2, 3, -1]])
    mask = torch.tensor([[True, True, False]])
    # object 1: |0..7| summed = 28; object 2: 4 -> (28 + 4) / 2 objects = 16
    assert regression_l1_loss(reg, target, ind, mask).item() == pytest.approx(16.0)
    weights = [0.0] * 7 + [1.0]   # only cos yaw: (7 + 3) / 2 = 5
    assert regression_l1_loss(reg, target, ind, mask, weights).item() == pytest.approx(5.0)
    assert regression_l1_loss(reg, target, ind, torch.zeros_like(mask)).item() == 0.0
    # slot weights (targets' reg_weight): a weighted mean, (1 * 28 + 0.5 * 4) / 1.5 = 20
    slot_weights = torch.tensor([[1.0, 0.5, 7.0]])            # the empty slot's weight does not count
    assert regression_l1_loss(reg, target, ind, mask, slot_weights=slot_weights).item() == pytest.approx(20.0)


def test_cross_entropy_ignores_255():
    # Two classes, logits (0, ln 3) everywhere: p(class 1) = 0.75, p(class 0) = 0.25.
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 2, 2).clone()
    labels = torch.tensor([[[1, 0], [255, 255]]])
    expected = (-math.log(0.75) - math.log(0.25)) / 2
    assert semantic_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    # Whatever the prediction on ignored pixels, the loss stays the same.
    logits[0, 0, 1, :] = 50.0
    assert semantic_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_upsamples_logits_to_the_label_size():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 2, 3).clone().requires_grad_()
    labels = torch.ones(1, 8, 12, dtype=torch.int64)
    loss = semantic_cross_entropy(logits, labels)
    assert loss.item() == pytest.approx(-math.log(0.75), rel=1e-6)
    loss.backward()
    assert logits.grad.abs().sum() > 0


def test_cross_entropy_with_class_weights_and_without_any_label():
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1).expand(1, 2, 1, 3).clone()
    labels = torch.tensor([[[1, 0, 255]]])
    weights = torch.tensor([3.0, 1.0])
    expected = (1.0 * -math.log(0.75) + 3.0 * -math.log(0.25)) / (1.0 + 3.0)
    assert semantic_cross_entropy(logits, labels, weights).item() == pytest.approx(expected, rel=1e-6)
    assert semantic_cross_entropy(logits, labels, weights).item() == pytest.approx(
        F.cross_entropy(logits, labels, weight=weights, ignore_index=255).item(), rel=1e-6)
    all_ignored = torch.full_like(labels, 255)
    assert semantic_cross_entropy(logits, all_ignored).item() == 0.0
    assert semantic_cross_entropy(logits, all_ignored, weights).item() == 0.0


def test_class_weights_from_a_pixel_histogram():
    weights = semantic_class_weights([300, 100, 0])   # frequencies 0.75, 0.25, 0
    expected = [1 / math.log(1.77), 1 / math.log(1.27), 1 / math.log(1.02)]
    assert weights.tolist() == pytest.approx(expected, rel=1e-6)
    assert weights[0] < weights[1] < weights[2]       # rarer classes weigh more
    with pytest.raises(ValueError, match='positive sum'):
        semantic_class_weights([0, 0])
    with pytest.raises(ValueError, match='c must be > 1'):
        semantic_class_weights([1, 1], c=1.0)


def test_uncertainty_weighting_formula():
    weighting = UncertaintyWeighting(('heatmap', 'reg', 'sem'))
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([0.0, math.log(2.0), -1.0]))
    total = weighting({'heatmap': torch.tensor(1.0), 'reg': torch.tensor(2.0), 'sem': torch.tensor(3.0)})
    # 0.5 e^0 1 + 0 | 0.5 (1/2) 2 + 0.5 ln 2 | 0.5 e 3 - 0.5
    expected = 0.5 + (0.5 + 0.5 * LOG2) + (1.5 * math.e - 0.5)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()   # d/ds = 0.5 - 0.5 e^-s L
    assert weighting.log_vars.grad.tolist() == pytest.approx([0.0, 0.0, 0.5 - 1.5 * math.e], rel=1e-6)


def make_outputs_and_targets():
    outputs = {'bbox_heatmap': torch.zeros(1, 1, 2, 2, requires_grad=True),
               'bbox_reg': torch.zeros(1, 8, 2, 2, requires_grad=True),
               'sem_logits': torch.zeros(1, 2, 1, 1, requires_grad=True)}
    targets = {'heatmap': torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 1, 2, 2),
               'reg': torch.ones(1, 1, 8), 'ind': torch.tensor([[0]]), 'mask': torch.tensor([[True]]),
               'class_map': torch.zeros(1, 2, 2, dtype=torch.int64)}
    return outputs, targets


def test_multitask_loss_total_and_terms():
    outputs, targets = make_outputs_and_targets()
    heatmap = 0.25 * LOG2 + 3 * 0.25 * LOG2   # one centre and three background cells at p = 0.5
    reg = 8.0                                  # |0 - 1| over 8 parameters, one object
    sem = LOG2                                 # two classes at equal logits
    total, terms = MultiTaskLoss(sem_weight=0.5)(outputs, targets)
    assert terms['heatmap'].item() == pytest.approx(heatmap, rel=1e-6)
    assert terms['reg'].item() == pytest.approx(reg)
    assert terms['sem'].item() == pytest.approx(sem, rel=1e-6)
    assert terms['weighted/reg'].item() == pytest.approx(0.25 * reg)
    assert total.item() == pytest.approx(heatmap + 0.25 * reg + 0.5 * sem, rel=1e-6)
    assert terms['total'].item() == pytest.approx(total.item())
    total.backward()
    assert all(v.grad is not None for v in outputs.values())

    del targets['class_map']                   # unlabelled images: no semantic term
    total, terms = MultiTaskLoss()(outputs, targets)
    assert terms['sem'].item() == 0.0
    assert total.item() == pytest.approx(heatmap + 0.25 * reg, rel=1e-6)


def test_multitask_loss_with_uncertainty_weighting():
    outputs, targets = make_outputs_and_targets()
    criterion = MultiTaskLoss(uncertainty_weighting=True)
    total, terms = criterion(outputs, targets)
    # s = 0 at the start: half of the fixed-weight total
    fixed = terms['weighted/heatmap'] + terms['weighted/reg'] + terms['weighted/sem']
    assert total.item() == pytest.approx(0.5 * fixed.item(), rel=1e-6)
    assert {'log_var/heatmap', 'log_var/reg', 'log_var/sem'} <= set(terms)
    assert len(list(criterion.parameters())) == 1
    with pytest.raises(ValueError, match='reg weight'):
        MultiTaskLoss(reg_weight=-1.0)
