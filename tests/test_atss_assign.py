"""ATSS assignment on hand-built scenes and against a per-box loop written from the paper."""

import importlib
import importlib.abc
import statistics
import sys

import pytest
import torch

from dyhead_d2.atss import atss_assign
from dyhead_d2.atss.reference import atss_assign_per_box as reference_assign


def iou(a, b):
    """IoU of two XYXY boxes given as Python sequences, for the hand-built scenes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def threshold(candidate_ious):
    return statistics.mean(candidate_ious) + statistics.stdev(candidate_ious)


def far_boxes(n, size=10.0):
    """``n`` boxes far from the scene (IoU 0 with everything in it), to pad a level."""
    return [[1000.0 + 20 * i, 1000.0, 1000.0 + 20 * i + size, 1000.0 + size] for i in range(n)]


def assign(anchors, per_level, gts, topk=9):
    gts = torch.tensor(gts, dtype=torch.float32).reshape(-1, 4)
    return atss_assign(torch.tensor(anchors, dtype=torch.float32), per_level, gts, topk=topk)


def test_package_does_not_import_detectron2(monkeypatch):
    # Re-import the package in this process with every detectron2 import recorded and refused
    # (cheaper than a fresh interpreter, and it also catches imports wrapped in try/except).
    attempts = []

    class RefuseDetectron2(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "detectron2" or name.startswith("detectron2."):
                attempts.append(name)
                raise ImportError(f"{name} is refused in this test")
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in ("dyhead_d2", "detectron2"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [RefuseDetectron2()] + sys.meta_path)
    module = importlib.import_module("dyhead_d2.atss")
    assert callable(module.atss_assign)
    assert attempts == []
    # On teardown monkeypatch puts the original modules back over the re-imported ones.


def test_centre_outside_or_on_border_is_rejected():
    gt = [0.0, 0.0, 10.0, 10.0]
    inside = [0.0, 0.0, 10.0, 9.5]  # IoU 0.95, centre (5, 4.75)
    on_border = [1.0, 0.0, 19.0, 10.0]  # IoU 9/19, centre (10, 5): right distance 0
    near_border = [1.0, 0.0, 18.992, 10.0]  # IoU ~0.474, centre (9.996, 5): inside by 0.004
    outside = [2.0, 0.0, 18.5, 10.0]  # IoU 80/185, centre (10.25, 5)
    anchors = [inside, on_border, near_border, outside] + far_boxes(20)
    ious = [iou(a, gt) for a in anchors]
    # All 24 anchors are candidates (topk 24, one level). The three rejected anchors clear the
    # IoU threshold, so only the centre test (margin 0.01) can reject them.
    assert min(ious[:4]) >= threshold(ious)
    matched = assign(anchors, [24], [gt], topk=24)
    assert matched.tolist() == [0] + [-1] * 23


def test_shared_anchor_goes_to_higher_iou():
    g0, g1 = [0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 14.0, 10.0]
    a = [0.0, 0.0, 10.0, 10.0]  # IoU 1 with g0, 80/140 with g1
    s = [2.0, 0.0, 12.0, 10.0]  # IoU 80/120 with g0, 100/120 with g1
    anchors = [a, s] + far_boxes(18)
    for g in (g0, g1):
        ious = [iou(x, g) for x in anchors]
        assert min(ious[0], ious[1]) >= threshold(ious)  # both claim both anchors
    matched = assign(anchors, [20], [g0, g1], topk=20)
    # s goes to box 1 although box 0 also claims it and has the lower index.
    assert matched.tolist() == [0, 1] + [-1] * 18
    # Swapping the boxes swaps the answer.
    assert assign(anchors, [20], [g1, g0], topk=20).tolist() == [1, 0] + [-1] * 18


def test_exact_iou_tie_goes_to_lowest_box_index():
    g = [0.0, 0.0, 10.0, 10.0]
    anchors = [[0.0, 0.0, 10.0, 9.5]] + far_boxes(19)
    matched = assign(anchors, [20], [g, g, g], topk=20)
    assert matched.tolist() == [0] + [-1] * 19


def test_level_with_fewer_anchors_than_topk():
    # Level 0: 4x4 anchors of size 8 at stride 8. Level 1: two anchors of size 16, fewer than topk.
    level0 = [
        [x - 4.0, y - 4.0, x + 4.0, y + 4.0] for y in (4, 12, 20, 28) for x in (4, 12, 20, 28)
    ]
    level1 = [[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 32.0, 16.0]]
    gt = [16.0, 0.0, 32.0, 16.0]
    # Candidates: the 9 level-0 anchors nearest (24, 8) (four inside the box with IoU 0.25, five
    # beside it with IoU 0) and both level-1 anchors (IoU 0 and 1). Threshold = 2/11 + std ~ 0.48.
    cand = [0.25] * 4 + [0.0] * 5 + [0.0, 1.0]
    assert 0.25 < threshold(cand) < 1.0
    matched = assign(level0 + level1, [16, 2], [gt], topk=9)
    expected = [-1] * 18
    expected[17] = 0
    assert matched.tolist() == expected


def test_single_candidate_has_zero_std_and_ties_pick_lower_anchor():
    # One level, topk 1: the only candidate's threshold is its own IoU (std taken as 0; the
    # authors' NaN would leave the box without a positive). Both anchor centres are 5 from the
    # box centre (10, 5); the lower anchor index is the candidate.
    left, right = [0.0, 0.0, 10.0, 10.0], [10.0, 0.0, 20.0, 10.0]
    gt = [2.0, 0.0, 18.0, 10.0]
    assert assign([left, right], [2], [gt], topk=1).tolist() == [0, -1]
    assert assign([right, left], [2], [gt], topk=1).tolist() == [0, -1]
    # Eight identical anchors on a box: the first three are the candidates (and positives, with
    # IoU 1 = threshold). A plain topk may return any three of them.
    same = [[40.0, 40.0, 60.0, 60.0]] * 8
    assert assign(same, [8], same[:1], topk=3).tolist() == [0, 0, 0] + [-1] * 5
    # Three levels of one anchor each: three candidates, an ordinary std.
    anchors = [[0.0, 0.0, 10.0, 10.0], [-5.0, -5.0, 15.0, 15.0], [-15.0, -15.0, 25.0, 25.0]]
    gt = [1.0, 1.0, 9.0, 9.0]
    ious = [iou(a, gt) for a in anchors]  # 0.64, 0.16, 0.04
    assert ious[0] >= threshold(ious) > ious[1]
    assert assign(anchors, [1, 1, 1], [gt], topk=1).tolist() == [0, -1, -1]


def test_no_ground_truth():
    matched = atss_assign(
        torch.rand(7, 4) * 10 + torch.tensor([0, 0, 10, 10]), [4, 3], torch.zeros(0, 4)
    )
    assert matched.dtype == torch.int64
    assert matched.tolist() == [-1] * 7


def test_degenerate_boxes_get_no_positives():
    level0 = [
        [x - 4.0, y - 4.0, x + 4.0, y + 4.0] for y in (4, 12, 20, 28) for x in (4, 12, 20, 28)
    ]
    good = [8.0, 8.0, 24.0, 24.0]
    degenerate = [[12.0, 4.0, 12.0, 28.0], [4.0, 12.0, 28.0, 12.0], [12.0, 12.0, 12.0, 12.0]]
    alone = assign(level0, [16], [good])
    assert (alone == 0).sum() > 0
    matched = assign(level0, [16], degenerate[:2] + [good] + degenerate[2:])
    # The good box (now index 2) keeps exactly its positives; the degenerate ones get none.
    assert torch.equal(matched, torch.where(alone == 0, 2, -1))
    assert assign(level0, [16], degenerate).tolist() == [-1] * 16
    # A zero-area anchor on a zero-area box: their IoU is 0 / 0 = NaN, which must not leak into
    # the good box's assignment or produce a match.
    point = [12.0, 12.0, 12.0, 12.0]
    matched = assign(level0 + [point], [16, 1], [point, good], topk=9)
    assert torch.equal(matched, torch.cat([torch.where(alone == 0, 1, -1), torch.tensor([-1])]))


def grid_anchors(sizes=((8, 8), (4, 4), (2, 2)), strides=(8, 16, 32), anchor_scale=4):
    """One square anchor per location, the reproduction's layout (size = 4 * stride here)."""
    levels = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cx, cy = (xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s
        half = anchor_scale * s / 2
        levels.append(torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1))
    return torch.cat(levels).double(), [len(lv) for lv in levels]


def random_boxes(m, extent=64.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * extent
    wh = torch.rand(m, 2, generator=g, dtype=torch.float64) * 40 + 2
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=1)


@pytest.mark.parametrize("seed,num_gt", [(0, 1), (1, 5), (2, 30)])
def test_matches_per_box_loop(seed, num_gt):
    anchors, per_level = grid_anchors()
    gts = random_boxes(num_gt, seed=seed)
    expected = reference_assign(anchors, per_level, gts, topk=9)
    assert (expected >= 0).any()
    assert torch.equal(atss_assign(anchors, per_level, gts, topk=9), expected)
    # topk above the coarsest level's 4 anchors.
    expected = reference_assign(anchors, per_level, gts, topk=6)
    assert torch.equal(atss_assign(anchors, per_level, gts, topk=6), expected)


def test_200_boxes():
    anchors, per_level = grid_anchors()
    gts = random_boxes(200, seed=3)
    matched = atss_assign(anchors.float(), per_level, gts.float())
    assert matched.shape == (len(anchors),)
    assert (matched >= 0).sum() >= 10 and matched.min() >= -1 and matched.max() < 200
    assert torch.equal(matched, reference_assign(anchors.float(), per_level, gts.float(), topk=9))


@pytest.mark.cuda
def test_cuda_matches_cpu():
    anchors, per_level = grid_anchors()
    gts = random_boxes(50, seed=4)
    cpu = atss_assign(anchors.float(), per_level, gts.float())
    cuda = atss_assign(anchors.float().cuda(), per_level, gts.float().cuda())
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)


def test_bad_arguments():
    anchors = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    with pytest.raises(ValueError, match="sums to 2"):
        atss_assign(anchors, [1, 1], torch.zeros(1, 4))
    with pytest.raises(ValueError, match="topk"):
        atss_assign(anchors, [3], torch.zeros(1, 4), topk=0)
