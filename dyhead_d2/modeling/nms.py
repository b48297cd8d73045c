"""Class-aware NMS: each class on its own, on the original coordinates, on every device; it exports
to ONNX as one ``NonMaxSuppression`` over per-class scores, which computes the same.

torchvision's (and so Detectron2's) ``batched_nms`` picks its algorithm by device and box count:
one NMS per class, or one NMS over all boxes shifted by ``class * (max coordinate + 1)``. At COCO
sizes the shifted coordinates reach 1e5, where float32 rounding (about 0.01 px) moves IoUs by
about 1e-4 and flips suppressions close to the threshold; on a CUDA device it shifts below 25,000
boxes, on the CPU below 1,000, so the same model gave different detections on a GPU and on a CPU.
Here the project chooses: always one NMS per class (torchvision's ``nms``, whose CPU and CUDA
kernels rank boxes by a stable sort), as ONNX's ``NonMaxSuppression`` does in the exported file.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

__all__ = ["class_aware_nms"]

_INT64_MAX = 2**63 - 1


class _ClassAwareNMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, boxes, scores, classes, iou_threshold: float, num_classes: int):
        return _per_class_nms(boxes, scores, classes, iou_threshold, num_classes)

    @staticmethod
    def symbolic(g, boxes, scores, classes, iou_threshold: float, num_classes: int):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor(value, dtype=dtype))

        # (1, C, N) scores: each box's score in its class's row, 0 (never kept) elsewhere.
        one_hot = g.op(
            "OneHot", classes, const(num_classes, torch.int64), const([0.0, 1.0], torch.float32)
        )
        per_class = g.op("Mul", one_hot, g.op("Unsqueeze", scores, const([1], torch.int64)))
        per_class = g.op("Transpose", per_class, perm_i=[1, 0])
        per_class = g.op("Unsqueeze", per_class, const([0], torch.int64))
        selected = g.op(
            "NonMaxSuppression",
            g.op("Unsqueeze", boxes, const([0], torch.int64)),
            per_class,
            const([_INT64_MAX], torch.int64),
            const([iou_threshold], torch.float32),
            const([0.0], torch.float32),
        )
        # (K, 3) rows (batch, class, box) grouped by class -> box indices by descending score.
        keep = g.op(
            "Squeeze",
            g.op(
                "Slice",
                selected,
                const([2], torch.int64),
                const([3], torch.int64),
                const([1], torch.int64),
            ),
            const([1], torch.int64),
        )
        kept_scores = g.op("Gather", scores, keep, axis_i=0)
        # TopK orders equal scores by position, i.e. by class: as the eager stable sort does.
        order = g.op(
            "TopK", kept_scores, g.op("Shape", keep), axis_i=0, largest_i=1, sorted_i=1, outputs=2
        )[1]
        return g.op("Gather", keep, order, axis_i=0)


def _per_class_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int
) -> Tensor:
    # float32: float16 coordinates lose whole pixels above 2048 (Detectron2 casts the boxes too),
    # and torchvision's NMS needs boxes and scores of one dtype.
    boxes, scores = boxes.float(), scores.float()
    # The boxes of each class, in index order: one host read for all the classes' counts
    # (bincount would read the largest class first); then one torchvision NMS per class present.
    order = torch.argsort(classes, stable=True)
    counts = torch.zeros(num_classes, dtype=torch.int64, device=classes.device)
    counts = counts.scatter_add_(0, classes, torch.ones_like(classes)).tolist()
    kept, start = [], 0
    for count in counts:
        if count:
            idx = order[start : start + count]
            kept.append(idx[nms(boxes[idx], scores[idx], iou_threshold)])
        start += count
    if not kept:
        return classes.new_zeros(0)
    keep = torch.cat(kept)  # by class, then by descending score
    # A stable sort keeps equal scores in class order, as the export's TopK does.
    return keep[torch.sort(scores[keep], descending=True, stable=True).indices]


def class_aware_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int
) -> Tensor:
    """Indices of the boxes kept by NMS within each class, by decreasing score (equal scores: the
    lower class first, then the lower index).

    One ``torchvision.ops.nms`` per class present, on the original coordinates, whatever the
    device and the number of boxes (see the module docstring); a box suppresses another of its
    class whose IoU with it exceeds ``iou_threshold``.

    Args:
        boxes: (N, 4) XYXY. scores: (N,). classes: (N,) int64 in [0, num_classes).
    """
    if torch.jit.is_tracing():
        return _ClassAwareNMS.apply(boxes, scores, classes, float(iou_threshold), num_classes)
    return _per_class_nms(boxes, scores, classes, iou_threshold, num_classes)
