"""ATSS inference: pick the scored (anchor, class) candidates of one feature level."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["select_topk_candidates", "TOPK_BY"]

# "score": rank by probability * centerness (the authors' Detectron2 port);
# "prob": rank by the class probability alone (MMDetection).
TOPK_BY = ("score", "prob")


def select_topk_candidates(
    probs: Tensor, centerness: Tensor, score_thresh: float, topk: int, *, topk_by: str
) -> tuple[Tensor, Tensor, Tensor]:
    """The at most ``topk`` best (anchor, class) pairs of one image and one level.

    A pair is a candidate when its class probability exceeds ``score_thresh``; the threshold
    applies before centerness, as in both ports. Its score is ``probability * centerness``.

    Args:
        probs: (R, K) class probabilities (sigmoid of the logits).
        centerness: (R,) centerness probabilities (sigmoid of the centerness logits).
        score_thresh: minimum class probability (exclusive).
        topk: maximum number of pairs kept.
        topk_by: what ranks the candidates, one of :data:`TOPK_BY`.

    Returns:
        ``(scores, anchor_idxs, class_idxs)``, each (T,) with T <= topk, ordered by the ranking
        (best first; ties by the lower anchor, then class, index). ``scores`` is always
        probability * centerness, whatever ranked them.
    """
    if topk_by not in TOPK_BY:
        raise ValueError(f"Unknown topk_by {topk_by!r}; expected one of {', '.join(TOPK_BY)}")
    num_classes = probs.shape[1]
    flat_probs = probs.flatten()
    # Indices of the candidates in the flattened (R, K) map, ascending.
    cand = torch.nonzero(flat_probs > score_thresh).squeeze(1)
    cand_probs = flat_probs[cand]
    anchor_idxs = torch.div(cand, num_classes, rounding_mode="floor")
    scores = cand_probs * centerness[anchor_idxs]

    key = scores if topk_by == "score" else cand_probs
    # A stable sort keeps tied candidates in index order, identically on CPU and CUDA. Under
    # tracing (ONNX export) the sort becomes ONNX's TopK, which orders ties by index too (and
    # has no "stable" argument to export).
    if torch.jit.is_tracing():
        order = torch.sort(key, descending=True).indices[:topk]
    else:
        order = torch.sort(key, descending=True, stable=True).indices[:topk]
    return scores[order], anchor_idxs[order], cand[order] % num_classes
