"""Regression-quality targets of the ATSS positives."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["centerness_targets"]


def centerness_targets(anchor_centers: Tensor, boxes: Tensor) -> Tensor:
    """Centerness of each anchor centre within its matched box, in [0, 1].

    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))`` where l, t, r, b are the distances from
    the centre to the left, top, right and bottom sides: 1 at the box centre, falling to 0 at its
    border. Negative distances (centre outside the box) count as 0 and a zero denominator gives 0,
    so degenerate boxes yield 0 instead of NaN or inf.

    Args:
        anchor_centers: (P, 2) as (x, y).
        boxes: (P, 4) XYXY boxes matched to those anchors.

    Returns:
        (P,) centerness targets.
    """
    x, y = anchor_centers.unbind(dim=1)
    left, top, right, bottom = x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y
    tiny = torch.finfo(boxes.dtype).tiny
    ratio_x = torch.minimum(left, right).clamp(min=0) / torch.maximum(left, right).clamp(min=tiny)
    ratio_y = torch.minimum(top, bottom).clamp(min=0) / torch.maximum(top, bottom).clamp(min=tiny)
    # min <= max, and a correctly rounded a / b with a <= b never exceeds 1, so no upper clamp.
    return (ratio_x * ratio_y).sqrt()
