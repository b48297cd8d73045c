"""Per-level candidate selection on hand-built probabilities."""

import pytest
import torch

from dyhead_d2.atss import select_topk_candidates


def scene():
    # 3 anchors x 2 classes. Pair (0, 1) has probability 0.04 and is below the 0.05 threshold.
    probs = torch.tensor([[0.9, 0.04], [0.6, 0.3], [0.5, 0.06]])
    centerness = torch.tensor([0.05, 0.9, 1.0])
    # Scores of the candidates: (0,0) 0.045, (1,0) 0.54, (1,1) 0.27, (2,0) 0.5, (2,1) 0.06.
    return probs, centerness


def as_lists(out):
    """The candidates (the ``valid`` rows), in order, as lists."""
    scores, anchors, classes, valid = out
    assert scores.shape == anchors.shape == classes.shape == valid.shape
    # Fixed size: every candidate comes before every other pair.
    n = int(valid.sum())
    assert bool(valid[:n].all()) and not bool(valid[n:].any())
    s, a, c = scores[:n], anchors[:n], classes[:n]
    return [round(x, 6) for x in s.tolist()], a.tolist(), c.tolist()


def test_rank_by_score_vs_prob():
    probs, ctr = scene()
    by_score = select_topk_candidates(probs, ctr, 0.05, 2, topk_by="score")
    assert as_lists(by_score) == ([0.54, 0.5], [1, 2], [0, 0])
    by_prob = select_topk_candidates(probs, ctr, 0.05, 2, topk_by="prob")
    # Ranked by probability (0.9, 0.6) but still scored probability * centerness.
    assert as_lists(by_prob) == ([0.045, 0.54], [0, 1], [0, 0])


def test_threshold_applies_before_centerness():
    probs, ctr = scene()
    out = select_topk_candidates(probs, ctr, 0.05, 100, topk_by="score")
    scores, anchors, classes, valid = out
    # Pair (0, 0) scores 0.045 < 0.05 yet stays: its probability 0.9 passed. (0, 1) does not.
    assert as_lists(out) == (
        [0.54, 0.5, 0.27, 0.06, 0.045],
        [1, 2, 1, 2, 0],
        [0, 0, 1, 1, 0],
    )
    assert scores.dtype == probs.dtype
    assert anchors.dtype == classes.dtype == torch.int64


def test_threshold_is_strict():
    probs = torch.tensor([[0.5, 0.25], [0.75, 0.5]])
    ctr = torch.ones(2)
    out = select_topk_candidates(probs, ctr, 0.5, 10, topk_by="prob")
    assert as_lists(out) == ([0.75], [1], [0])


def test_nothing_passes():
    probs, ctr = scene()
    out = select_topk_candidates(probs, ctr, 0.95, 10, topk_by="score")
    # min(10, 3 x 2) rows, none of them a candidate.
    assert [t.shape for t in out] == [(6,)] * 4 and not bool(out[3].any())
    assert as_lists(out) == ([], [], [])
    assert out[1].dtype == out[2].dtype == torch.int64 and out[3].dtype == torch.bool
    empty = select_topk_candidates(torch.zeros(0, 2), torch.zeros(0), 0.05, 10, topk_by="prob")
    assert all(t.numel() == 0 for t in empty)


def test_fixed_size_whatever_passes():
    # The number of rows depends on the shapes only: min(topk, R * K).
    probs, ctr = scene()
    for thresh in (0.0, 0.05, 0.5, 0.99):
        for topk in (1, 4, 6, 100):
            out = select_topk_candidates(probs, ctr, thresh, topk, topk_by="score")
            assert out[0].shape == (min(topk, 6),)


def test_ties_keep_index_order():
    probs = torch.full((3, 2), 0.5)
    ctr = torch.ones(3)
    out = select_topk_candidates(probs, ctr, 0.05, 4, topk_by="score")
    assert as_lists(out) == ([0.5] * 4, [0, 0, 1, 1], [0, 1, 0, 1])


def stable_sort_reference(probs, ctr, thresh, topk, topk_by):
    """The candidates by a stable descending sort of the ranking key (ties: lower index)."""
    flat = probs.flatten()
    cand = torch.nonzero(flat > thresh).squeeze(1)
    scores = flat[cand] * ctr[cand // probs.shape[1]]
    key = scores if topk_by == "score" else flat[cand]
    order = torch.sort(key, descending=True, stable=True).indices[:topk]
    return (
        scores[order].tolist(),
        (cand[order] // probs.shape[1]).tolist(),
        (cand[order] % probs.shape[1]).tolist(),
    )


@pytest.mark.parametrize("topk_by", ["score", "prob"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_a_stable_sort_with_many_ties(topk_by, dtype):
    # Probabilities and centerness on coarse grids: many exact ties, in and across the cut.
    g = torch.Generator().manual_seed(0)
    probs = (torch.randint(0, 12, (300, 7), generator=g) / 10.0).to(dtype)
    ctr = (torch.randint(1, 5, (300,), generator=g) / 4.0).to(dtype)
    for topk in (5, 50, 2100, 5000):
        scores, anchors, classes, valid = select_topk_candidates(
            probs, ctr, 0.3, topk, topk_by=topk_by
        )
        n = int(valid.sum())
        want = stable_sort_reference(probs, ctr, 0.3, topk, topk_by)
        assert (scores[:n].tolist(), anchors[:n].tolist(), classes[:n].tolist()) == want


def test_unknown_ranking():
    probs, ctr = scene()
    with pytest.raises(ValueError, match="'centerness'"):
        select_topk_candidates(probs, ctr, 0.05, 2, topk_by="centerness")
