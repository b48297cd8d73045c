"""ATSS inference: rank the scored (anchor, class) candidates of one feature level."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["select_topk_candidates", "TOPK_BY"]

# "score": rank by probability * centerness (the authors' Detectron2 port);
# "prob": rank by the class probability alone (MMDetection).
TOPK_BY = ("score", "prob")


def select_topk_candidates(
    probs: Tensor, centerness: Tensor, score_thresh: float, topk: int, *, topk_by: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The best ``min(topk, R * K)`` (anchor, class) pairs of one image and one level: a number
    fixed by the shapes, so that nothing is read back to the host (no device synchronisation).

    A pair is a candidate when its class probability exceeds ``score_thresh``; the threshold
    applies before centerness, as in both ports. Its score is ``probability * centerness``.
    Candidates are ranked by ``topk_by`` (ties: the lower anchor, then class, index) ahead of
    every other pair; ``valid`` marks them. Keeping the ``valid`` rows gives, in order, the at
    most ``topk`` best candidates.

    Args:
        probs: (R, K) class probabilities (sigmoid of the logits).
        centerness: (R,) centerness probabilities (sigmoid of the centerness logits).
        score_thresh: minimum class probability (exclusive).
        topk: maximum number of pairs kept.
        topk_by: what ranks the candidates, one of :data:`TOPK_BY`.

    Returns:
        ``(scores, anchor_idxs, class_idxs, valid)``, each (T,) with T = min(topk, R * K):
        ``scores`` (probability * centerness, whatever ranked them), int64 indices, and bool.
    """
    if topk_by not in TOPK_BY:
        raise ValueError(f"Unknown topk_by {topk_by!r}; expected one of {', '.join(TOPK_BY)}")
    num_classes = probs.shape[1]
    flat_probs = probs.flatten()
    scores = (probs * centerness[:, None]).flatten()
    key = scores if topk_by == "score" else flat_probs
    passed = flat_probs > score_thresh
    # Detectron2's _decode_per_level_predictions keeps its candidates with a nonzero per level
    # (a host read each) and thresholds what it ranks; a fixed-size top-k of the masked keys
    # needs no read, and ties are ordered the same way on every device (below).
    order = _ranked(key, passed, topk)
    return scores[order], order // num_classes, order % num_classes, passed[order]


def _ranked(key: Tensor, passed: Tensor, topk: int) -> Tensor:
    """Indices of the ``min(topk, n)`` largest ``key`` among the ``passed`` entries, then the
    others; equal keys by ascending index, as a stable descending sort would order them."""
    n = key.shape[0]
    if torch.jit.is_tracing():
        # ONNX's TopK orders equal values by index; k follows the traced level size. Keys are
        # probabilities or scores, >= 0, so -1 ranks every other pair last.
        k = torch.clamp(torch.as_tensor(n), max=topk)
        return torch.topk(torch.where(passed, key, -1.0), k).indices
    k = min(topk, n)
    # Scores are never NaN unless the model is broken; ranked first then, as a sort would.
    masked = torch.where(passed, key.nan_to_num(nan=float("inf")), -1.0)
    # topk finds the k largest values but leaves open which of several values equal to the
    # k-th it returns, and in which order (CPU and CUDA differ). Exact without a host read:
    # those above the k-th value, sorted by value then index (k of them at most), then the
    # lowest indices of those equal to it (nonzero_static: a fixed-size nonzero).
    values, indices = torch.topk(masked, k)
    by_index = torch.argsort(indices)
    values, indices = values[by_index], indices[by_index]
    by_value = torch.sort(values, descending=True, stable=True).indices
    values, indices = values[by_value], indices[by_value]
    kth = values[-1:]
    above = (values > kth).sum()
    tied = torch.nonzero_static(masked == kth, size=k).squeeze(1)
    position = torch.arange(k, device=key.device)
    return torch.where(position < above, indices, tied[(position - above).clamp(min=0)])
