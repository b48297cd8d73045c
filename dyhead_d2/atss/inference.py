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
    if key.dtype != torch.float32 or n >= 2**32:
        return torch.sort(torch.where(passed, key, -1.0), descending=True, stable=True).indices[:k]
    # topk does not specify how it orders equal values (CPU and CUDA differ), so rank unique
    # int64 keys: a non-negative float32's bit pattern orders like its value (clamped: a
    # negative one, which scores never are, counts as 0); times n plus the reversed index it
    # breaks ties by the lower index. Below every candidate: -1.
    index = torch.arange(n, device=key.device, dtype=torch.int64)
    bits = key.contiguous().view(torch.int32).clamp(min=0).to(torch.int64)
    unique = bits * n + (n - 1 - index)
    return torch.topk(torch.where(passed, unique, -1), k).indices
