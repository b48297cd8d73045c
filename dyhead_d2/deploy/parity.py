"""Do two runs of a detector give the same detections? (numpy only)

Used to check an export against PyTorch. Detections are paired one to one: same class, boxes
within ``box_tol`` pixels (every coordinate) and scores within ``score_tol``. Two kinds of
unpaired detections are float rounding, not a different function, and are counted apart:

* at the cut: runs that stopped at ``max_detections`` may keep different detections of the
  (nearly) lowest scores; such a detection's score is at most the other run's lowest score (plus
  ``score_tol``);
* at the NMS threshold: with ``nms_thresh`` given, a detection one run kept and the other
  suppressed, whose IoU with a higher-scored detection of its class in the other run is within
  ``iou_tol`` of the threshold (the two runs' IoUs fell on either side of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Parity", "compare_detections", "mask_iou"]


@dataclass
class Parity:
    """The outcome of :func:`compare_detections`."""

    count: tuple[int, int]  # detections of each run
    matched: int
    max_box_diff: float  # over the matched pairs (0 when none)
    max_score_diff: float
    unmatched: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))
    at_cut: int = 0  # unmatched ones explained by the max_detections cut
    at_nms_threshold: int = 0  # unmatched ones explained by an IoU at the NMS threshold
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (first, second) indices

    @property
    def unexplained(self) -> int:
        return sum(map(len, self.unmatched)) - self.at_cut - self.at_nms_threshold

    @property
    def ok(self) -> bool:
        return self.count[0] == self.count[1] and self.unexplained == 0

    def __str__(self) -> str:
        text = (
            f"{self.count[0]} vs {self.count[1]} detections, {self.matched} matched; max "
            f"difference boxes {self.max_box_diff:.2e} px, scores {self.max_score_diff:.2e}"
        )
        if any(self.unmatched):
            text += (
                f"; unmatched {self.unmatched[0]} / {self.unmatched[1]}: {self.at_cut} at the "
                f"max_detections cut, {self.at_nms_threshold} at the NMS IoU threshold, "
                f"{self.unexplained} NOT EXPLAINED"
            )
        return text


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = np.prod(box[2:] - box[:2])
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
    return inter / np.maximum(area + areas - inter, 1e-12)


def compare_detections(
    first: tuple[np.ndarray, np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    box_tol: float = 0.01,
    score_tol: float = 1e-4,
    max_detections: int | None = None,
    nms_thresh: float | None = None,
    iou_tol: float = 1e-3,
    min_iou: float | None = None,
) -> Parity:
    """Pair the detections ``(boxes (N, 4), scores (N,), classes (N,))`` of two runs; with
    ``min_iou``, a pair must also overlap by at least that IoU."""
    boxes_a, scores_a, classes_a = (np.asarray(x) for x in first)
    boxes_b, scores_b, classes_b = (np.asarray(x) for x in second)
    used = np.zeros(len(scores_b), dtype=bool)
    box_diff = score_diff = 0.0
    unmatched_a, pairs = [], []
    for i in np.argsort(-scores_a, kind="stable"):
        d_box = np.abs(boxes_b - boxes_a[i]).max(axis=1) if len(boxes_b) else np.zeros(0)
        d_score = np.abs(scores_b - scores_a[i])
        fits = (~used) & (classes_b == classes_a[i]) & (d_box <= box_tol) & (d_score <= score_tol)
        if min_iou is not None and len(boxes_b):
            fits &= _iou(boxes_a[i], boxes_b) >= min_iou
        if not fits.any():
            unmatched_a.append(int(i))
            continue
        # The closest candidate, so that near-duplicates pair up with their own twin.
        j = int(np.flatnonzero(fits)[np.argmin(d_box[fits])])
        used[j] = True
        pairs.append((int(i), j))
        box_diff = max(box_diff, float(d_box[j]))
        score_diff = max(score_diff, float(d_score[j]))
    unmatched_b = [int(j) for j in np.flatnonzero(~used)]
    at_cut = at_nms = 0
    runs = ((boxes_a, scores_a, classes_a), (boxes_b, scores_b, classes_b))
    for mine, other, indices in ((0, 1, unmatched_a), (1, 0, unmatched_b)):
        boxes, scores, classes = runs[mine]
        o_boxes, o_scores, o_classes = runs[other]
        for i in indices:
            if nms_thresh is not None:
                rivals = (o_classes == classes[i]) & (o_scores > scores[i] - score_tol)
                ious = _iou(boxes[i], o_boxes[rivals]) if rivals.any() else np.zeros(0)
                if (np.abs(ious - nms_thresh) <= iou_tol).any():
                    at_nms += 1
                    continue
            # Both runs full, and the other run's last kept score is as low: it could not
            # have kept this one too.
            full = max_detections and min(len(scores), len(o_scores)) >= max_detections
            if full and scores[i] <= o_scores.min() + score_tol:
                at_cut += 1
    return Parity(
        (len(scores_a), len(scores_b)),
        len(scores_a) - len(unmatched_a),
        box_diff,
        score_diff,
        (sorted(unmatched_a), unmatched_b),
        at_cut,
        at_nms,
        sorted(pairs),
    )


def mask_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """IoU of each pair of binary masks ``first[k]``, ``second[k]`` ((N, H, W) each); 1 where
    both are empty."""
    first = np.asarray(first, dtype=bool).reshape(len(first), -1)
    second = np.asarray(second, dtype=bool).reshape(len(second), -1)
    inter = (first & second).sum(axis=1)
    union = (first | second).sum(axis=1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
