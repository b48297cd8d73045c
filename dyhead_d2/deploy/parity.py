"""Do two runs of a detector give the same detections? (numpy only)

Used to check an export against PyTorch. Detections are paired one to one: same class, boxes
within ``box_tol`` pixels (every coordinate) and scores within ``score_tol``. When the first run
stopped at ``max_detections``, detections whose scores lie within ``score_tol`` of its lowest
kept score may differ: which of several equal scores makes the cut is float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Parity", "compare_detections"]


@dataclass
class Parity:
    """The outcome of :func:`compare_detections`."""

    count: tuple[int, int]  # detections of each run
    matched: int
    max_box_diff: float  # over the matched pairs (0 when none)
    max_score_diff: float
    unmatched: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))
    at_cut: bool = False  # the unmatched ones all tie at the max_detections cut

    @property
    def ok(self) -> bool:
        return self.count[0] == self.count[1] and (not any(self.unmatched) or self.at_cut)

    def __str__(self) -> str:
        text = (
            f"{self.count[0]} vs {self.count[1]} detections, {self.matched} matched; max "
            f"difference boxes {self.max_box_diff:.2e} px, scores {self.max_score_diff:.2e}"
        )
        if any(self.unmatched):
            why = "tied at the max_detections cut" if self.at_cut else "NOT MATCHED"
            text += f"; unmatched {self.unmatched[0]} / {self.unmatched[1]} ({why})"
        return text


def compare_detections(
    first: tuple[np.ndarray, np.ndarray, np.ndarray],
    second: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    box_tol: float = 0.01,
    score_tol: float = 1e-4,
    max_detections: int | None = None,
) -> Parity:
    """Pair the detections ``(boxes (N, 4), scores (N,), classes (N,))`` of two runs."""
    boxes_a, scores_a, classes_a = (np.asarray(x) for x in first)
    boxes_b, scores_b, classes_b = (np.asarray(x) for x in second)
    used = np.zeros(len(scores_b), dtype=bool)
    box_diff = score_diff = 0.0
    unmatched_a = []
    for i in np.argsort(-scores_a, kind="stable"):
        d_box = np.abs(boxes_b - boxes_a[i]).max(axis=1) if len(boxes_b) else np.zeros(0)
        d_score = np.abs(scores_b - scores_a[i])
        fits = (~used) & (classes_b == classes_a[i]) & (d_box <= box_tol) & (d_score <= score_tol)
        if not fits.any():
            unmatched_a.append(int(i))
            continue
        # The closest candidate, so that near-duplicates pair up with their own twin.
        j = int(np.flatnonzero(fits)[np.argmin(d_box[fits])])
        used[j] = True
        box_diff = max(box_diff, float(d_box[j]))
        score_diff = max(score_diff, float(d_score[j]))
    unmatched_b = [int(j) for j in np.flatnonzero(~used)]
    at_cut = False
    if (unmatched_a or unmatched_b) and max_detections and len(scores_a) >= max_detections:
        cut = float(scores_a.min()) + score_tol
        at_cut = all(scores_a[i] <= cut for i in unmatched_a) and all(
            scores_b[j] <= cut for j in unmatched_b
        )
    return Parity(
        (len(scores_a), len(scores_b)),
        len(scores_a) - len(unmatched_a),
        box_diff,
        score_diff,
        (sorted(unmatched_a), unmatched_b),
        at_cut,
    )
