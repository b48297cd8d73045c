"""ATSS training losses: focal classification, centerness-weighted GIoU, centerness BCE."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

__all__ = ["atss_losses", "giou_loss", "reduce_mean_over_workers"]


def reduce_mean_over_workers(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over all distributed workers (itself when not distributed).

    Every worker must call this the same number of times, whatever its own inputs, or the
    collective blocks forever. Returns a new tensor; the input is left untouched.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor.clone()
    world_size = dist.get_world_size()
    if world_size == 1:
        return tensor.clone()
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / world_size


def giou_loss(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-7) -> Tensor:
    """``1 - GIoU`` of each pair of (..., 4) XYXY boxes: torchvision's
    ``generalized_box_iou_loss(reduction="none")``, the same operations in the same order (equal
    values and gradients), with ``torch.where`` where torchvision indexes with a boolean mask,
    which reads the mask back to the host (a device synchronisation per call)."""
    if boxes1.dtype not in (torch.float32, torch.float64):
        boxes1 = boxes1.float()
    if boxes2.dtype not in (torch.float32, torch.float64):
        boxes2 = boxes2.float()
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlaps = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk = torch.where(overlaps, (xkis2 - xkis1) * (ykis2 - ykis1), 0.0)
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    iouk = intsctk / (unionk + eps)
    area_c = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iouk - ((area_c - unionk) / (area_c + eps)))


def atss_losses(
    pred_logits: Tensor,
    gt_labels: Tensor,
    pred_boxes: Tensor,
    target_boxes: Tensor,
    pred_centerness: Tensor,
    centerness_target: Tensor,
    *,
    num_classes: int,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_loss_weight: float = 2.0,
) -> dict[str, Tensor]:
    """The three ATSS losses of a batch, normalised as in the authors' training.

    Every tensor covers every anchor, (N, R, ...): the positives (``gt_labels < K``) are selected
    by masking, not by indexing, so that no shape depends on the data and nothing is read back to
    the host (no device synchronisation). The classification loss covers every anchor; the other
    two only the positives, whose terms are those of the authors' loss (the sums differ from a
    sum over the gathered positives only by float rounding). The normalisers are averaged over
    workers so every worker's gradient has the same scale: ``num_pos_avg = max(sum of P over
    workers / world_size, 1)`` and ``sum_ctr_avg = sum of the positives' centerness targets over
    workers / world_size``. Both travel in a single all-reduce, made by every worker even when it
    has no positives. Targets, box losses and centerness losses are float32 whatever the dtype of
    the predictions (e.g. float16 under autocast).

    Args:
        pred_logits: (N, R, K) class logits of every anchor.
        gt_labels: (N, R) int64 in [0, K]; K means background.
        pred_boxes: (N, R, 4) XYXY boxes decoded from the predicted deltas.
        target_boxes: (N, R, 4) XYXY ground-truth boxes matched to the positives. At background
            anchors any box of positive width and height (e.g. the anchor itself): its terms
            are masked out, but must stay finite for the gradient to be 0 there.
        pred_centerness: (N, R) centerness logits.
        centerness_target: (N, R) centerness targets in [0, 1] of the positives, see
            :func:`~dyhead_d2.atss.targets.centerness_targets`; any value in [0, 1] at
            background anchors.
        num_classes: K.
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        box_loss_weight: multiplies the GIoU loss.

    Returns:
        dict with scalar tensors ``loss_cls``, ``loss_box_reg`` and ``loss_centerness``. With no
        positives the last two are exactly 0 yet still depend on ``pred_boxes`` and
        ``pred_centerness``, so backward and DDP see those parameters used.
    """
    if pred_logits.shape[-1] != num_classes:
        raise ValueError(
            f"atss_losses: pred_logits has {pred_logits.shape[-1]} classes in its last dimension "
            f"(shape {tuple(pred_logits.shape)}) but num_classes is {num_classes}"
        )
    shape = tuple(gt_labels.shape)
    shapes = {
        "pred_logits": tuple(pred_logits.shape[:-1]),
        "pred_boxes": tuple(pred_boxes.shape[:-1]),
        "target_boxes": tuple(target_boxes.shape[:-1]),
        "pred_centerness": tuple(pred_centerness.shape),
        "centerness_target": tuple(centerness_target.shape),
    }
    if any(s != shape for s in shapes.values()) or pred_boxes.shape[-1] != 4:
        raise ValueError(
            f"atss_losses: every tensor needs one entry per anchor, (N, R) = {shape} as "
            f"gt_labels; got (without the last dimension of logits and boxes) {shapes}, "
            f"boxes of {pred_boxes.shape[-1]} coordinates"
        )

    positive = gt_labels != num_classes
    ctr_target = torch.where(positive, centerness_target.detach().float(), 0.0)
    # float32 even under mixed precision: a half-precision count is exact only up to 2048.
    local = torch.stack([positive.sum().float(), ctr_target.sum()])
    num_pos_avg, sum_ctr_avg = reduce_mean_over_workers(local).unbind()
    num_pos_avg = num_pos_avg.clamp(min=1.0)
    # Zero only when no worker has a positive, and then the weighted sum below is zero as well.
    sum_ctr_avg = sum_ctr_avg.clamp(min=torch.finfo(sum_ctr_avg.dtype).eps)

    # One-hot targets; the background label K gets an all-zero row. (F.one_hot checks the
    # labels' range with a host read on the CPU.)
    classes = torch.arange(num_classes, device=gt_labels.device)
    gt_onehot = (gt_labels.unsqueeze(-1) == classes).float()
    # In float32 whatever the logits' dtype, as Detectron2's (fvcore's) focal loss computes it.
    loss_cls = (
        sigmoid_focal_loss(
            pred_logits.float(),
            gt_onehot,
            alpha=focal_alpha,
            gamma=focal_gamma,
            reduction="sum",
        )
        / num_pos_avg
    )

    # With no positive both sums are sums of zeros: exact zeros that still hang off the graph of
    # pred_boxes / pred_centerness (and sum_ctr_avg is then clamped, not 0, so no 0 / 0).
    giou = giou_loss(pred_boxes.float(), target_boxes.float())
    loss_box_reg = (
        box_loss_weight * torch.where(positive, giou * ctr_target, 0.0).sum() / sum_ctr_avg
    )
    bce = F.binary_cross_entropy_with_logits(
        pred_centerness.float(), centerness_target.detach().float(), reduction="none"
    )
    loss_centerness = torch.where(positive, bce, 0.0).sum() / num_pos_avg
    return {
        "loss_cls": loss_cls,
        "loss_box_reg": loss_box_reg,
        "loss_centerness": loss_centerness,
    }
