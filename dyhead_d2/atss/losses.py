"""ATSS training losses: focal classification, centerness-weighted GIoU, centerness BCE."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

__all__ = ["atss_losses", "reduce_mean_over_workers"]


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

    The classification loss covers every anchor; the other two only the P positives. The
    normalisers are averaged over workers so every worker's gradient has the same scale:
    ``num_pos_avg = max(sum of P over workers / world_size, 1)`` and
    ``sum_ctr_avg = sum of centerness targets over workers / world_size``. Both travel in a single
    all-reduce, made by every worker even when it has no positives.

    Args:
        pred_logits: (N, R, K) class logits of every anchor.
        gt_labels: (N, R) int64 in [0, K]; K means background.
        pred_boxes: (P, 4) XYXY boxes decoded from the positives' predicted deltas.
        target_boxes: (P, 4) XYXY ground-truth boxes matched to the positives.
        pred_centerness: (P,) centerness logits of the positives.
        centerness_target: (P,) centerness targets in [0, 1], see
            :func:`~dyhead_d2.atss.targets.centerness_targets`.
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
    num_pos = pred_boxes.shape[0]
    if not (
        num_pos == target_boxes.shape[0] == pred_centerness.shape[0] == centerness_target.shape[0]
    ):
        raise ValueError(
            "atss_losses: the positives' tensors disagree on P: pred_boxes "
            f"{tuple(pred_boxes.shape)}, target_boxes {tuple(target_boxes.shape)}, "
            f"pred_centerness {tuple(pred_centerness.shape)}, "
            f"centerness_target {tuple(centerness_target.shape)}"
        )

    ctr_target = centerness_target.detach()
    # float32 even under mixed precision: a half-precision count is exact only up to 2048.
    local = torch.stack(
        [
            torch.full((), float(num_pos), dtype=torch.float32, device=pred_logits.device),
            ctr_target.sum().float(),
        ]
    )
    num_pos_avg, sum_ctr_avg = reduce_mean_over_workers(local).unbind()
    num_pos_avg = num_pos_avg.clamp(min=1.0)
    # Zero only when no worker has a positive, and then the weighted sum below is zero as well.
    sum_ctr_avg = sum_ctr_avg.clamp(min=torch.finfo(sum_ctr_avg.dtype).eps)

    # The background label K becomes an all-zero row once its one-hot column is dropped.
    gt_onehot = F.one_hot(gt_labels, num_classes + 1)[..., :num_classes].float()
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

    # With P = 0 both sums are over empty tensors: exact zeros that still hang off the graph of
    # pred_boxes / pred_centerness (and sum_ctr_avg is then clamped, not 0, so no 0 / 0).
    giou = generalized_box_iou_loss(pred_boxes, target_boxes, reduction="none")
    loss_box_reg = box_loss_weight * (giou * ctr_target).sum() / sum_ctr_avg
    loss_centerness = (
        F.binary_cross_entropy_with_logits(
            pred_centerness, ctr_target.to(pred_centerness.dtype), reduction="sum"
        )
        / num_pos_avg
    )
    return {
        "loss_cls": loss_cls,
        "loss_box_reg": loss_box_reg,
        "loss_centerness": loss_centerness,
    }
