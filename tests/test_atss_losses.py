"""ATSS losses and centerness targets against formulas written out here, incl. 2-worker gloo."""

import math
import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss

from dyhead_d2.atss import atss_losses, centerness_targets, reduce_mean_over_workers
from dyhead_d2.atss.losses import giou_loss

ALPHA, GAMMA = 0.25, 2.0


# ---- centerness targets --------------------------------------------------------------------


def test_centerness_hand_values():
    box = [0.0, 0.0, 10.0, 10.0]
    centers = torch.tensor([[5.0, 5.0], [2.0, 5.0], [2.0, 1.0], [7.5, 9.0]])
    # (5,5): 1. (2,5): sqrt(2/8 * 1) = 0.5. (2,1): sqrt(2/8 * 1/9) = 1/6.
    # (7.5,9): sqrt(2.5/7.5 * 1/9) = sqrt(1/27).
    expected = torch.tensor([1.0, 0.5, 1.0 / 6.0, math.sqrt(1.0 / 27.0)])
    out = centerness_targets(centers, torch.tensor([box] * 4))
    torch.testing.assert_close(out, expected)


def test_centerness_degenerate_inputs_stay_in_unit_interval():
    centers = torch.tensor([[5.0, 5.0], [5.0, 5.0], [5.0, 5.0], [20.0, 5.0], [0.0, 5.0]])
    boxes = torch.tensor(
        [
            [5.0, 5.0, 5.0, 5.0],  # a point on the centre: all four distances 0
            [5.0, 0.0, 5.0, 10.0],  # zero width
            [8.0, 8.0, 2.0, 2.0],  # inverted
            [0.0, 0.0, 10.0, 10.0],  # centre outside
            [0.0, 0.0, 10.0, 10.0],  # centre on the border
        ]
    )
    out = centerness_targets(centers, boxes)
    assert torch.isfinite(out).all()
    assert torch.equal(out, torch.zeros(5))
    big = torch.tensor([[1e-30, 1e-30]]), torch.tensor([[0.0, 0.0, 2e-30, 2e-30]])
    torch.testing.assert_close(centerness_targets(*big), torch.ones(1))


# ---- GIoU ----------------------------------------------------------------------------------


def test_giou_loss_is_torchvisions_values_and_gradients():
    # Overlapping, disjoint, touching, nested, identical and degenerate pairs, in float32 and
    # float64: the same bits as torchvision's, which gathers with a boolean mask instead.
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 500, 2, generator=g) * 20
    wh = torch.rand(2, 500, 2, generator=g) * 10
    boxes = torch.cat([xy, xy + wh], dim=2)
    boxes[1, :50] = boxes[0, :50]  # identical
    boxes[0, 50:60, 2:] = boxes[0, 50:60, :2]  # zero area
    boxes[1, 60:70, :2] = boxes[0, 60:70, 2:]  # touching corners
    boxes[1, 60:70, 2:] = boxes[1, 60:70, :2] + 3
    for dtype in (torch.float32, torch.float64):
        a = [boxes[0].to(dtype).requires_grad_(), boxes[1].to(dtype).requires_grad_()]
        b = [t.detach().clone().requires_grad_() for t in a]
        ours = giou_loss(*a)
        theirs = generalized_box_iou_loss(*b, reduction="none")
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)
        cotangent = torch.randn(ours.shape, generator=g, dtype=dtype)
        ours.backward(cotangent)
        theirs.backward(cotangent)
        assert torch.equal(a[0].grad, b[0].grad) and torch.equal(a[1].grad, b[1].grad)
    half = giou_loss(boxes[0].half(), boxes[1].half())
    assert half.dtype == torch.float32
    assert torch.equal(half, generalized_box_iou_loss(boxes[0].half(), boxes[1].half()))


# ---- losses on hand-computed values --------------------------------------------------------


def focal_term(x: float, target: int) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    if target:
        return -ALPHA * (1.0 - p) ** GAMMA * math.log(p)
    return -(1.0 - ALPHA) * p**GAMMA * math.log(1.0 - p)


def bce_term(x: float, t: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return -(t * math.log(p) + (1.0 - t) * math.log(1.0 - p))


# Background anchors' boxes and centerness: anything well-formed; they must not count.
BACKGROUND_BOX = [5.0, 5.0, 9.0, 6.0]


def tiny_batch():
    """2 images x 2 anchors x 2 classes; positives (image 0, anchor 0, class 0) and (1, 1, 1)."""
    logits = torch.tensor([[[1.0, -2.0], [0.5, 0.0]], [[-1.0, 3.0], [2.0, -0.5]]])
    labels = torch.tensor([[0, 2], [2, 1]])
    pred_boxes = torch.tensor(
        [[[0.0, 0.0, 2.0, 2.0], [0.0, 1.0, 7.0, 3.0]], [[2.0, 2.0, 3.0, 8.0], [0.0, 0.0, 4.0, 2.0]]]
    )
    target_boxes = torch.tensor(
        [[[1.0, 1.0, 3.0, 3.0], BACKGROUND_BOX], [BACKGROUND_BOX, [0.0, 0.0, 4.0, 4.0]]]
    )
    pred_ctr = torch.tensor([[0.3, 4.0], [-2.5, -1.2]])
    ctr_target = torch.tensor([[0.5, 0.9], [0.1, 0.25]])
    return logits, labels, pred_boxes, target_boxes, pred_ctr, ctr_target


POSITIVES = ([0, 1], [0, 1])  # (image, anchor) index lists of the positives


def test_losses_hand_values():
    logits, labels, *rest = tiny_batch()
    out = atss_losses(logits, labels, *rest, num_classes=2)
    assert set(out) == {"loss_cls", "loss_box_reg", "loss_centerness"}

    onehot = [[[1, 0], [0, 0]], [[0, 0], [0, 1]]]
    focal = sum(
        focal_term(logits[n, r, k].item(), onehot[n][r][k])
        for n in range(2)
        for r in range(2)
        for k in range(2)
    )
    # Box 1: intersection 1, union 4 + 4 - 1 = 7, enclosing 3x3 = 9. Box 2: IoU 8/16, enclosing
    # = union, so GIoU = 0.5.
    giou_loss = [1.0 - (1.0 / 7.0 - 2.0 / 9.0), 0.5]
    num_pos = 2.0
    expected_box = 2.0 * (0.5 * giou_loss[0] + 0.25 * giou_loss[1]) / (0.5 + 0.25)
    expected_ctr = (bce_term(0.3, 0.5) + bce_term(-1.2, 0.25)) / num_pos
    assert out["loss_cls"].item() == pytest.approx(focal / num_pos, rel=1e-5)
    assert out["loss_box_reg"].item() == pytest.approx(expected_box, rel=1e-5)
    assert out["loss_centerness"].item() == pytest.approx(expected_ctr, rel=1e-5)

    # The options reach the formulas.
    out = atss_losses(
        logits, labels, *rest, num_classes=2, focal_alpha=0.5, focal_gamma=0.0, box_loss_weight=1.0
    )
    ce = sum(
        bce_term(logits[n, r, k].item(), onehot[n][r][k])
        for n in range(2)
        for r in range(2)
        for k in range(2)
    )
    assert out["loss_cls"].item() == pytest.approx(0.5 * ce / num_pos, rel=1e-5)
    assert out["loss_box_reg"].item() == pytest.approx(expected_box / 2.0, rel=1e-5)


def test_box_loss_normalised_by_sum_of_centerness_not_num_pos():
    logits, labels, pred_boxes, target_boxes, pred_ctr, _ = tiny_batch()
    giou_loss = torch.tensor([1.0 - (1.0 / 7.0 - 2.0 / 9.0), 0.5])
    for ctr_target in ([0.5, 0.25], [0.9, 0.1], [0.2, 0.2]):
        t = torch.tensor(ctr_target)
        full = torch.full((2, 2), 0.7)
        full[POSITIVES] = t
        out = atss_losses(logits, labels, pred_boxes, target_boxes, pred_ctr, full, num_classes=2)
        expected = 2.0 * (giou_loss * t).sum() / t.sum()
        torch.testing.assert_close(out["loss_box_reg"], expected)
        t = full
    # Scaling every centerness target leaves the box loss unchanged: only their ratios weigh.
    a = atss_losses(logits, labels, pred_boxes, target_boxes, pred_ctr, t, num_classes=2)
    b = atss_losses(logits, labels, pred_boxes, target_boxes, pred_ctr, t * 3, num_classes=2)
    torch.testing.assert_close(a["loss_box_reg"], b["loss_box_reg"])


def test_background_anchors_do_not_count():
    # Other boxes, centerness logits and targets at the background anchors: the same losses,
    # and no gradient reaches the background anchors' predictions.
    logits, labels, pred_boxes, target_boxes, pred_ctr, ctr_target = tiny_batch()
    boxes = pred_boxes.clone().requires_grad_()
    ctr = pred_ctr.clone().requires_grad_()
    ref = atss_losses(logits, labels, boxes, target_boxes, ctr, ctr_target, num_classes=2)
    sum(ref.values()).backward()
    background = ([0, 1], [1, 0])
    assert torch.equal(boxes.grad[background], torch.zeros(2, 4))
    assert torch.equal(ctr.grad[background], torch.zeros(2))
    assert boxes.grad[POSITIVES].abs().sum() > 0 and ctr.grad[POSITIVES].abs().sum() > 0
    other_boxes, other_targets = pred_boxes.clone(), target_boxes.clone()
    other_ctr, other_ctr_target = pred_ctr.clone(), ctr_target.clone()
    other_boxes[background] = torch.tensor([[0.0, 0.0, 50.0, 50.0], [3.0, 1.0, 3.5, 1.5]])
    other_targets[background] = torch.tensor([[1.0, 1.0, 2.0, 2.0], [7.0, 7.0, 70.0, 9.0]])
    other_ctr[background] = torch.tensor([-30.0, 30.0])
    other_ctr_target[background] = torch.tensor([0.0, 1.0])
    out = atss_losses(
        logits, labels, other_boxes, other_targets, other_ctr, other_ctr_target, num_classes=2
    )
    for name in ref:
        assert torch.equal(out[name], ref[name]), name


def test_float16_predictions_float32_targets_and_losses():
    # Under autocast the head's outputs are float16; the targets must not be rounded to it.
    logits, labels, pred_boxes, target_boxes, pred_ctr, ctr_target = tiny_batch()
    ctr_target = ctr_target + 1e-4  # 0.5001 and 0.2501 are not float16 values
    out = atss_losses(
        logits.half(),
        labels,
        pred_boxes.half(),
        target_boxes,
        pred_ctr.half(),
        ctr_target,
        num_classes=2,
    )
    assert all(v.dtype == torch.float32 for v in out.values())
    ref = atss_losses(
        logits.half().float(),
        labels,
        pred_boxes.half().float(),
        target_boxes,
        pred_ctr.half().float(),
        ctr_target,
        num_classes=2,
    )
    for name in ref:
        assert torch.equal(out[name], ref[name]), name
    rounded = atss_losses(
        logits.half().float(),
        labels,
        pred_boxes.half().float(),
        target_boxes,
        pred_ctr.half().float(),
        ctr_target.half().float(),
        num_classes=2,
    )
    assert not torch.equal(out["loss_centerness"], rounded["loss_centerness"])


def test_no_positives_zero_but_connected():
    torch.manual_seed(0)
    logits_param = torch.randn(2, 3, 4, requires_grad=True)
    boxes_param = torch.tensor([[0.0, 0.0, 4.0, 3.0]]).repeat(2, 3, 1).requires_grad_()
    ctr_param = torch.randn(2, 3, requires_grad=True)
    labels = torch.full((2, 3), 4)  # every anchor background: an image without annotations
    out = atss_losses(
        logits_param * 1.0,
        labels,
        boxes_param * 1.0,
        torch.tensor([1.0, 1.0, 2.0, 2.0]).expand(2, 3, 4),
        ctr_param * 1.0,
        torch.full((2, 3), 0.5),
        num_classes=4,
    )
    assert out["loss_box_reg"].item() == 0.0 and out["loss_centerness"].item() == 0.0
    assert out["loss_box_reg"].requires_grad and out["loss_centerness"].requires_grad
    # num_pos_avg is clamped to 1, so the classification loss is the plain sum.
    p = logits_param.detach().sigmoid()
    focal = (-(1 - ALPHA) * p**GAMMA * torch.log1p(-p)).sum()
    assert math.isfinite(out["loss_cls"].item())
    torch.testing.assert_close(out["loss_cls"], focal)
    sum(out.values()).backward()
    assert boxes_param.grad is not None and torch.equal(boxes_param.grad, torch.zeros(2, 3, 4))
    assert ctr_param.grad is not None and torch.equal(ctr_param.grad, torch.zeros(2, 3))
    assert torch.isfinite(logits_param.grad).all() and logits_param.grad.abs().sum() > 0


def test_reduce_mean_without_process_group_is_a_copy():
    x = torch.tensor([3.0, 1.5])
    y = reduce_mean_over_workers(x)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()


def test_bad_shapes():
    logits, labels, pred_boxes, target_boxes, pred_ctr, ctr_target = tiny_batch()
    with pytest.raises(ValueError, match="num_classes is 3"):
        atss_losses(logits, labels, pred_boxes, target_boxes, pred_ctr, ctr_target, num_classes=3)
    with pytest.raises(ValueError, match=r"one entry per anchor, \(N, R\) = \(2, 2\)"):
        atss_losses(
            logits, labels, pred_boxes, target_boxes, pred_ctr[:1], ctr_target, num_classes=2
        )


# ---- two workers ---------------------------------------------------------------------------

K_DIST, R_DIST = 3, 6


def reference_losses(inputs, num_pos_avg, sum_ctr_avg):
    """The spec's formulas on one worker's inputs, given the workers' averaged normalisers."""
    logits, labels = inputs["pred_logits"], inputs["gt_labels"]
    t = F.one_hot(labels, K_DIST + 1)[..., :K_DIST].float()
    p = logits.sigmoid()
    ce = -(t * F.logsigmoid(logits) + (1 - t) * F.logsigmoid(-logits))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = ALPHA * t + (1 - ALPHA) * (1 - t)
    focal = (alpha_t * (1 - p_t) ** GAMMA * ce).sum()

    positive = labels != K_DIST
    pb, tb = inputs["pred_boxes"][positive], inputs["target_boxes"][positive]
    lt, rb = torch.maximum(pb[:, :2], tb[:, :2]), torch.minimum(pb[:, 2:], tb[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = (pb[:, 2:] - pb[:, :2]).prod(dim=1) + (tb[:, 2:] - tb[:, :2]).prod(dim=1) - inter
    enclosing = (torch.maximum(pb[:, 2:], tb[:, 2:]) - torch.minimum(pb[:, :2], tb[:, :2])).prod(1)
    giou = inter / union - (enclosing - union) / enclosing
    ctr_t = inputs["centerness_target"][positive]
    ctr_x = inputs["pred_centerness"][positive]
    bce = -(ctr_t * F.logsigmoid(ctr_x) + (1 - ctr_t) * F.logsigmoid(-ctr_x)).sum()
    box = 2.0 * ((1 - giou) * ctr_t).sum() / sum_ctr_avg if len(pb) else torch.tensor(0.0)
    return {
        "loss_cls": focal / num_pos_avg,
        "loss_box_reg": box,
        "loss_centerness": bce / num_pos_avg,
    }


def make_image(ctr_targets, seed):
    """One image's inputs with one positive per entry of ``ctr_targets``."""
    g = torch.Generator().manual_seed(seed)
    num_pos = len(ctr_targets)
    labels = torch.full((1, R_DIST), K_DIST)
    labels[0, :num_pos] = torch.randint(0, K_DIST, (num_pos,), generator=g)
    xy = torch.rand(2, 1, R_DIST, 2, generator=g) * 10
    wh = torch.rand(2, 1, R_DIST, 2, generator=g) * 10 + 1
    boxes = torch.cat([xy, xy + wh], dim=3)
    ctr = torch.rand(1, R_DIST, generator=g)  # the background anchors' values do not count
    ctr[0, :num_pos] = torch.tensor(ctr_targets, dtype=torch.float32)
    return {
        "pred_logits": torch.randn(1, R_DIST, K_DIST, generator=g),
        "gt_labels": labels,
        "pred_boxes": boxes[0],
        "target_boxes": boxes[1],
        "pred_centerness": torch.randn(1, R_DIST, generator=g),
        "centerness_target": ctr,
    }


# (worker 0's centerness targets, worker 1's): one positive per target.
DIST_CASES = [
    ([0.5, 0.25, 0.75], [0.25]),  # num_pos_avg = 2, sum_ctr_avg = 0.875
    ([0.5, 0.25, 0.75], []),  # worker 1 has no positive yet must join the all-reduce
    ([], []),  # nobody has a positive: num_pos_avg clamps to 1
]


def _losses_worker(rank, world_size, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=10),
    )
    try:
        results = []
        for i, case in enumerate(DIST_CASES):
            out = atss_losses(**make_image(case[rank], seed=10 * i + rank), num_classes=K_DIST)
            results.append({k: v.detach() for k, v in out.items()})
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_workers_average_the_normalisers(tmp_path):
    # Forked workers inherit the imported torch and start in well under a second; spawned ones
    # import torch and torchvision afresh (~5 s on a busy machine). The workers touch neither
    # CUDA nor the intra-op thread pool (one thread), the usual hazards of forking.
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(
        _losses_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=False,
        start_method=method,
    )
    deadline = time.monotonic() + 30
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "workers did not finish (deadlocked all-reduce?)"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for i, case in enumerate(DIST_CASES):
        num_pos_avg = max((len(case[0]) + len(case[1])) / 2, 1.0)
        sum_ctr_avg = (sum(case[0]) + sum(case[1])) / 2
        for rank in range(2):
            expected = reference_losses(
                make_image(case[rank], 10 * i + rank), num_pos_avg, sum_ctr_avg
            )
            for name, value in expected.items():
                torch.testing.assert_close(
                    results[rank][i][name], value, msg=f"case {i}, rank {rank}, {name}"
                )
        # The normalisers are shared: they differ from each worker's local ones here.
        if i == 0:
            local = atss_losses(**make_image(case[1], seed=1), num_classes=K_DIST)
            assert not torch.allclose(local["loss_cls"], results[1][0]["loss_cls"])
