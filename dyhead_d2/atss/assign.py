"""ATSS label assignment: adaptive IoU threshold per ground-truth box (Zhang et al., CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = ["atss_assign", "box_centers"]

# Minimum distance (in input pixels) between a positive anchor's centre and every side of its box.
_INSIDE_MARGIN = 0.01


def box_centers(boxes: Tensor) -> Tensor:
    """Centres (R, 2) as (x, y) of (R, 4) XYXY boxes."""
    return (boxes[:, :2] + boxes[:, 2:]) * 0.5


def _tie_broken_key(dist2: Tensor) -> Tensor:
    """Unique int64 keys (n, M) ordered like (distance, anchor index) for (n, M) float32 ``dist2``.

    Grid anchors are often equidistant from a box centre, and which of them ``topk`` returns is
    unspecified (it differs between CPU and CUDA). The bit pattern of a non-negative float32 orders
    like its value, so ``bits * n + index`` breaks ties by the lower index at the cost of one
    O(n) ``topk``, where a stable sort of every column would cost O(n log n).
    """
    n = dist2.shape[0]
    index = torch.arange(n, device=dist2.device, dtype=torch.int64)[:, None]
    return dist2.view(torch.int32).to(torch.int64) * n + index


@torch.no_grad()
def atss_assign(
    anchors: Tensor, num_anchors_per_level: Sequence[int], gt_boxes: Tensor, topk: int = 9
) -> Tensor:
    """Match the anchors of one image to its ground-truth boxes with ATSS.

    For every ground-truth box, the ``min(topk, n_l)`` anchors of each level ``l`` whose centres
    are closest to the box centre are candidates. The box's IoU threshold is the mean plus the
    (unbiased) standard deviation of its candidates' IoUs; candidates at or above it whose centre
    lies inside the box (every side more than 0.01 away) are positives. An anchor claimed by
    several boxes goes to the one it overlaps most (exact ties: the lowest box index).

    All boxes are handled at once; only the levels are looped over. Centre distances are ranked in
    float32 and ties are broken by the lower anchor index, so CPU and CUDA choose the same
    candidates.

    Divergence from the authors: a box with a single candidate in total (e.g. one level holding a
    single anchor and ``topk = 1``) gets a standard deviation of 0 instead of NaN. The authors'
    NaN threshold fails every comparison and silently leaves such a box without positives.

    Args:
        anchors: (R, 4) XYXY anchors of all levels, concatenated fine to coarse.
        num_anchors_per_level: the number of anchors of each level; sums to R. With A anchors
            per location, pass ``topk = 9 * A`` to match the authors.
        gt_boxes: (M, 4) XYXY ground-truth boxes. Boxes with zero width or height (or inverted
            ones) get no positives.
        topk: candidates per level and box.

    Returns:
        (R,) int64: the index in ``gt_boxes`` matched to each anchor, or -1 for background.
    """
    if topk < 1:
        raise ValueError(f"atss_assign: topk must be >= 1, got {topk}")
    num_anchors = anchors.shape[0]
    if sum(num_anchors_per_level) != num_anchors:
        raise ValueError(
            f"atss_assign: num_anchors_per_level {list(num_anchors_per_level)} sums to "
            f"{sum(num_anchors_per_level)} but there are {num_anchors} anchors"
        )
    num_gt = gt_boxes.shape[0]
    matched_idxs = torch.full((num_anchors,), -1, dtype=torch.int64, device=anchors.device)
    if num_gt == 0 or num_anchors == 0:
        return matched_idxs

    # A NaN IoU (0 / 0 from a zero-area anchor and a zero-area box) fails every comparison below,
    # and such a box has no anchor centre strictly inside it anyway, so no clean-up is needed.
    ious = box_iou(anchors, gt_boxes)  # (R, M)
    anchor_ctr = box_centers(anchors)  # (R, 2)
    # Squared distances rank like Euclidean ones and need no sqrt.
    dist2 = (anchor_ctr[:, None, :] - box_centers(gt_boxes)[None, :, :]).pow(2).sum(dim=2)
    dist2 = dist2.float()  # see _tie_broken_key

    candidates = []
    start = 0
    for n in num_anchors_per_level:
        if n > 0:
            key = _tie_broken_key(dist2[start : start + n])
            candidates.append(key.topk(min(topk, n), dim=0, largest=False).indices + start)
        start += n
    candidate_idxs = torch.cat(candidates, dim=0)  # (C, M): C anchors per box, levels disjoint
    num_candidates = candidate_idxs.shape[0]

    candidate_ious = ious.gather(0, candidate_idxs)  # (C, M)
    threshold = candidate_ious.mean(dim=0)
    if num_candidates > 1:
        threshold = threshold + candidate_ious.std(dim=0)
    is_pos = candidate_ious >= threshold[None, :]

    ctr = anchor_ctr[candidate_idxs]  # (C, M, 2)
    sides = torch.stack(
        [
            ctr[..., 0] - gt_boxes[None, :, 0],
            ctr[..., 1] - gt_boxes[None, :, 1],
            gt_boxes[None, :, 2] - ctr[..., 0],
            gt_boxes[None, :, 3] - ctr[..., 1],
        ],
        dim=2,
    )
    is_pos &= sides.amin(dim=2) > _INSIDE_MARGIN

    # IoU of each (anchor, box) pair where the anchor is a positive of the box, else -inf.
    # Within a column the candidate indices are distinct, so the scatter has no collisions.
    pos_ious = torch.full_like(ious, float("-inf"))
    pos_ious.scatter_(0, candidate_idxs, candidate_ious.masked_fill(~is_pos, float("-inf")))
    best_iou = pos_ious.amax(dim=1, keepdim=True)  # (R, 1)
    # The lowest box index among those with the best IoU, spelled out rather than relying on
    # which index max() returns for ties.
    gt_index = torch.arange(num_gt, device=anchors.device).expand(num_anchors, num_gt)
    best_gt = torch.where(pos_ious == best_iou, gt_index, num_gt).amin(dim=1)
    return torch.where(best_iou[:, 0] > float("-inf"), best_gt, matched_idxs)
