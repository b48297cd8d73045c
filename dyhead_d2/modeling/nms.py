"""Class-aware NMS that exports to ONNX as one ``NonMaxSuppression`` over per-class scores.

Eager, it is Detectron2's ``batched_nms``. Under tracing, torchvision's batched NMS shifts every
class's boxes by ``class * (max coordinate + 1)`` and runs one NMS: at COCO sizes the shifted
coordinates reach 1e5, where float32 rounding (about 0.01 px) moves IoUs by about 1e-4 and flips
suppressions close to the threshold, so the exported detector would not give PyTorch's
detections. ONNX's ``NonMaxSuppression`` takes one score per (class, box) instead and suppresses
within each class on the original coordinates, as the eager per-class NMS does.
"""

from __future__ import annotations

import torch
from detectron2.layers import batched_nms
from torch import Tensor

__all__ = ["class_aware_nms"]

_INT64_MAX = 2**63 - 1


class _ClassAwareNMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, boxes, scores, classes, iou_threshold: float, num_classes: int):
        return batched_nms(boxes, scores, classes, iou_threshold)

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
        order = g.op(
            "TopK", kept_scores, g.op("Shape", keep), axis_i=0, largest_i=1, sorted_i=1, outputs=2
        )[1]
        return g.op("Gather", keep, order, axis_i=0)


def class_aware_nms(
    boxes: Tensor, scores: Tensor, classes: Tensor, iou_threshold: float, num_classes: int
) -> Tensor:
    """Indices of the boxes kept by NMS within each class, by decreasing score.

    Args:
        boxes: (N, 4) XYXY. scores: (N,). classes: (N,) int64 in [0, num_classes).
    """
    if torch.jit.is_tracing():
        return _ClassAwareNMS.apply(boxes, scores, classes, float(iou_threshold), num_classes)
    return batched_nms(boxes, scores, classes, iou_threshold)
