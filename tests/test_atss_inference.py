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
    scores, anchors, classes = out
    return [round(s, 6) for s in scores.tolist()], anchors.tolist(), classes.tolist()


def test_rank_by_score_vs_prob():
    probs, ctr = scene()
    by_score = select_topk_candidates(probs, ctr, 0.05, 2, topk_by="score")
    assert as_lists(by_score) == ([0.54, 0.5], [1, 2], [0, 0])
    by_prob = select_topk_candidates(probs, ctr, 0.05, 2, topk_by="prob")
    # Ranked by probability (0.9, 0.6) but still scored probability * centerness.
    assert as_lists(by_prob) == ([0.045, 0.54], [0, 1], [0, 0])


def test_threshold_applies_before_centerness():
    probs, ctr = scene()
    scores, anchors, classes = select_topk_candidates(probs, ctr, 0.05, 100, topk_by="score")
    # Pair (0, 0) scores 0.045 < 0.05 yet stays: its probability 0.9 passed. (0, 1) does not.
    assert as_lists((scores, anchors, classes)) == (
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
    scores, anchors, classes = select_topk_candidates(probs, ctr, 0.95, 10, topk_by="score")
    assert scores.shape == anchors.shape == classes.shape == (0,)
    assert anchors.dtype == classes.dtype == torch.int64
    empty = select_topk_candidates(torch.zeros(0, 2), torch.zeros(0), 0.05, 10, topk_by="prob")
    assert all(t.numel() == 0 for t in empty)


def test_ties_keep_index_order():
    probs = torch.full((3, 2), 0.5)
    ctr = torch.ones(3)
    out = select_topk_candidates(probs, ctr, 0.05, 4, topk_by="score")
    assert as_lists(out) == ([0.5] * 4, [0, 0, 1, 1], [0, 1, 0, 1])


def test_unknown_ranking():
    probs, ctr = scene()
    with pytest.raises(ValueError, match="'centerness'"):
        select_topk_candidates(probs, ctr, 0.05, 2, topk_by="centerness")
