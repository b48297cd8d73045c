"""The authors' ATSS assignment, one ground-truth box at a time: the reference for
:func:`~dyhead_d2.atss.atss_assign`.

This is the loop of the ATSS and DynamicHead code bases (``ATSSLossComputation.prepare_targets``):
for each ground-truth box, the ``topk`` anchors per level whose centres are nearest its centre
are candidates; those with IoU >= mean + std of the candidates' IoUs and centre inside the box
(by more than 0.01) are positives; an anchor positive for several boxes goes to the box of
highest IoU (the earlier box on an exact tie). :func:`atss_assign` computes the same for all boxes
at once; the tests check the two agree and ``tools/benchmark.py`` (d) times the reference with it.
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import box_iou

__all__ = ["atss_assign_per_box"]


def atss_assign_per_box(
    anchors: torch.Tensor,
    num_anchors_per_level: list[int],
    gt_boxes: torch.Tensor,
    topk: int = 9,
) -> torch.Tensor:
    """Index of the matched box of each anchor, -1 for negatives: (A,) int64.

    Args:
        anchors: (A, 4) XYXY, the levels one after another.
        num_anchors_per_level: how many of ``anchors`` each level has.
        gt_boxes: (M, 4) XYXY.
        topk: candidates per level and box.
    """
    matched = torch.full((len(anchors),), -1, dtype=torch.int64, device=anchors.device)
    ious = box_iou(anchors, gt_boxes)
    best = torch.full((len(anchors),), -math.inf, dtype=ious.dtype, device=anchors.device)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    for j, box in enumerate(gt_boxes):
        dist = ((centers - (box[:2] + box[2:]) / 2) ** 2).sum(dim=1).sqrt()
        candidates, start = [], 0
        for n in num_anchors_per_level:
            k = min(topk, n)
            candidates.append(dist[start : start + n].topk(k, largest=False).indices + start)
            start += n
        cand = torch.cat(candidates)
        cand_iou = ious[cand, j]
        threshold = cand_iou.mean() + cand_iou.std()
        c = centers[cand]
        inside = torch.stack(
            [c[:, 0] - box[0], c[:, 1] - box[1], box[2] - c[:, 0], box[3] - c[:, 1]]
        )
        pos = cand[(cand_iou >= threshold) & (inside.min(dim=0).values > 0.01)]
        better = ious[pos, j] > best[pos]
        matched[pos[better]] = j
        best[pos[better]] = ious[pos[better], j]
    return matched
