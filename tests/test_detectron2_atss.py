"""ATSS + DyHead inside a real Detectron2 (skipped, with the reason, when detectron2 is absent)."""

import math

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.modeling import META_ARCH_REGISTRY  # noqa: E402
from detectron2.modeling.meta_arch.retinanet import permute_to_N_HWA_K  # noqa: E402
from detectron2.structures import Boxes  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torchvision.ops import batched_nms as tv_batched_nms  # noqa: E402

from dyhead_d2.modeling import ATSS, DyHeadBackbone  # noqa: E402

from .d2_models import build_tiny_atss, make_input  # noqa: E402

LOSS_KEYS = {"loss_cls", "loss_box_reg", "loss_centerness"}


def train_losses(model, batch):
    model.train()
    with EventStorage():
        return model(batch)


def test_registered_and_lazy_attribute():
    import dyhead_d2

    assert META_ARCH_REGISTRY.get("ATSS") is ATSS
    assert dyhead_d2.ATSS is ATSS and dyhead_d2.DyHeadBackbone is DyHeadBackbone


def test_backbone_outputs_and_padding():
    model = build_tiny_atss()
    bb = model.backbone
    shapes = bb.output_shape()
    assert list(shapes) == ["p3", "p4", "p5", "p6", "p7"]
    assert [s.stride for s in shapes.values()] == [8, 16, 32, 64, 128]
    assert {s.channels for s in shapes.values()} == {32}
    assert bb.size_divisibility == 128
    assert bb.padding_constraints["size_divisibility"] == 128
    # An image of 100x150 is padded to 128x256; every level is then exactly image / stride.
    images = model.preprocess_image([make_input(100, 150, [], [])])
    assert tuple(images.tensor.shape[-2:]) == (128, 256)
    feats = bb(images.tensor)
    assert [tuple(f.shape[-2:]) for f in feats.values()] == [
        (16, 32),
        (8, 16),
        (4, 8),
        (2, 4),
        (1, 2),
    ]


@pytest.mark.parametrize("deform_impl", ["sampled", "torchvision"])
def test_backbone_outputs_are_contiguous_like_detectron2s(deform_impl):
    # Detectron2's heads reshape their outputs and work on them in place (RetinaNet's inference:
    # permute_to_N_HWA_K(...).sigmoid_()); on channels-last features that reshape is a view.
    model = build_tiny_atss()
    for module in model.modules():
        if hasattr(module, "deform_impl"):
            module.deform_impl = deform_impl
    images = model.preprocess_image([make_input(100, 150, [], [])])
    feats = model.backbone(images.tensor)
    assert all(f.is_contiguous() for f in feats.values())
    conv = torch.nn.Conv2d(32, 3 * 4, 1)
    logits = conv(feats["p3"])
    before = logits.clone()
    permute_to_N_HWA_K(logits, 3).sigmoid_()
    assert torch.equal(logits, before)


@pytest.mark.parametrize("bottom_up", ["resnet_caffe", "resnet_torchvision", "swin"])
def test_backbone_wraps_any_bottom_up(bottom_up):
    model = build_tiny_atss(bottom_up=bottom_up)
    images = model.preprocess_image([make_input(200, 136, [], [])])
    assert tuple(images.tensor.shape[-2:]) == (256, 256)
    feats = model.backbone(images.tensor)
    assert list(feats) == ["p3", "p4", "p5", "p6", "p7"]
    assert [tuple(f.shape[1:]) for f in feats.values()] == [
        (32, 256 // s, 256 // s) for s in (8, 16, 32, 64, 128)
    ]
    losses = train_losses(model, [make_input(200, 136, [[10, 10, 90, 120]], [1])])
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())


def test_backbone_rejects_channel_mismatch():
    from detectron2.config import instantiate

    from .d2_models import tiny_atss_config

    cfg = tiny_atss_config()
    cfg.backbone.dyhead.in_channels = 64
    cfg.backbone.dyhead.out_channels = 64
    with pytest.raises(ValueError, match="'p3' has 32 channels but the DyHead tower expects"):
        instantiate(cfg.backbone)


def test_assigner_is_a_constructor_argument():
    """The assignment is ATSS's ``assigner``: a stand-in sees every image's boxes, and the one
    it returns decides the losses (all anchors background: no box or centerness loss)."""
    batch = [
        make_input(128, 160, [[10, 20, 60, 90], [70, 30, 150, 120]], [0, 2]),
        make_input(96, 128, [[5, 5, 40, 30]], [1], seed=1),
    ]
    seen = []

    def background_only(anchors, num_per_level, gt_boxes, topk):
        seen.append((len(anchors), sum(num_per_level), len(gt_boxes), topk))
        return torch.full((len(anchors),), -1, dtype=torch.int64)

    model = build_tiny_atss()
    model.assigner = background_only
    losses = train_losses(model, batch)
    assert [s[2:] for s in seen] == [(2, 9), (1, 9)] and all(a == n for a, n, *_ in seen)
    assert losses["loss_box_reg"] == 0 and losses["loss_centerness"] == 0
    assert losses["loss_cls"] > 0


def test_training_losses_finite():
    model = build_tiny_atss()
    batch = [
        make_input(128, 160, [[10, 20, 60, 90], [70, 30, 150, 120]], [0, 2]),
        make_input(96, 128, [[5, 5, 40, 30]], [1], seed=1),
    ]
    losses = train_losses(model, batch)
    assert set(losses) == LOSS_KEYS
    for k, v in losses.items():
        assert v.dim() == 0 and torch.isfinite(v), k
        assert v > 0, k
    sum(losses.values()).backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad
    )


def test_overfits_one_batch():
    model = build_tiny_atss(seed=0)
    batch = [
        make_input(128, 128, [[16, 16, 64, 80], [72, 40, 120, 120]], [0, 1]),
        make_input(128, 128, [[30, 50, 100, 110]], [2], seed=3),
    ]
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9)
    totals = []
    for _ in range(30):
        losses = train_losses(model, batch)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(total.item())
    assert all(math.isfinite(t) for t in totals)
    # Centerness BCE cannot go below the entropy of its soft targets (~0.64 here), so halving the
    # total (~2.6 at the start) needs the classification and box losses to collapse.
    assert totals[-1] <= 0.5 * totals[0], totals


def test_empty_and_degenerate_images_train():
    model = build_tiny_atss()
    # All images empty: only negatives; box and centerness losses exactly zero, total finite.
    losses = train_losses(model, [make_input(64, 64, [], []), make_input(80, 96, [], [], seed=2)])
    assert losses["loss_box_reg"].item() == 0 and losses["loss_centerness"].item() == 0
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    # A batch mixing an empty image and one with a degenerate (zero-width / zero-height) box.
    model.zero_grad()
    batch = [
        make_input(64, 64, [], []),
        make_input(96, 96, [[10, 10, 10, 50], [20, 30, 60, 30], [40, 40, 90, 90]], [0, 1, 2]),
    ]
    losses = train_losses(model, batch)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box_reg"] > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_small_image_and_many_boxes():
    model = build_tiny_atss()
    # Smaller than the largest stride (128): padded up, still trains and infers.
    small = make_input(40, 50, [[5, 5, 30, 40]], [1])
    losses = train_losses(model, [small])
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        out = model([{"image": small["image"], "height": 40, "width": 50}])[0]["instances"]
    assert out.image_size == (40, 50)
    # 200 boxes in one image.
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 200
    wh = torch.rand(200, 2, generator=g) * 50 + 2
    boxes = torch.cat([xy, (xy + wh).clamp(max=255)], dim=1).tolist()
    classes = torch.randint(0, 3, (200,), generator=g).tolist()
    losses = train_losses(model, [make_input(256, 256, boxes, classes)])
    assert all(torch.isfinite(v) for v in losses.values())


def test_inference_instances_in_original_coordinates():
    model = build_tiny_atss()
    model.test_score_thresh = 0.0  # untrained: keep every candidate so there is something to check
    model.max_detections_per_image = 20
    model.eval()
    image = make_input(96, 128, [[10, 10, 50, 60]], [0])["image"]
    with torch.no_grad():
        native = model([{"image": image}])[0]["instances"]
        scaled = model([{"image": image, "height": 192, "width": 256}])[0]["instances"]
    assert native.image_size == (96, 128) and scaled.image_size == (192, 256)
    assert 0 < len(scaled) <= 20
    assert torch.all(scaled.scores[:-1] >= scaled.scores[1:])  # sorted
    torch.testing.assert_close(scaled.pred_boxes.tensor, native.pred_boxes.tensor * 2)
    b = scaled.pred_boxes.tensor
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 256).all() and (b[:, 3] <= 192).all()
    assert set(scaled.get_fields()) == {"pred_boxes", "scores", "pred_classes"}


def reference_inference(model, logits, deltas, ctr, anchors, topk_by):
    """Decode one image by the formulas written out: the authors' inference, level by level."""
    wx, wy, ww, wh = 10.0, 10.0, 5.0, 5.0
    clamp = math.log(1000.0 / 16)
    boxes_all, scores_all, classes_all = [], [], []
    for lg, dl, ct, an in zip(logits, deltas, ctr, anchors):
        prob = lg.sigmoid()
        score = prob * ct.sigmoid()
        cand = (prob > model.test_score_thresh).nonzero()
        rank = (score if topk_by == "score" else prob)[cand[:, 0], cand[:, 1]]
        order = rank.argsort(descending=True)[: model.test_topk_candidates]
        cand = cand[order]
        a = an.tensor[cand[:, 0]]
        d = dl[cand[:, 0]]
        aw, ah = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        cx, cy = a[:, 0] + 0.5 * aw, a[:, 1] + 0.5 * ah
        pcx, pcy = d[:, 0] / wx * aw + cx, d[:, 1] / wy * ah + cy
        pw = torch.exp((d[:, 2] / ww).clamp(max=clamp)) * aw
        ph = torch.exp((d[:, 3] / wh).clamp(max=clamp)) * ah
        boxes_all.append(torch.stack([pcx - pw / 2, pcy - ph / 2, pcx + pw / 2, pcy + ph / 2], 1))
        scores_all.append(score[cand[:, 0], cand[:, 1]])
        classes_all.append(cand[:, 1])
    boxes, scores, classes = torch.cat(boxes_all), torch.cat(scores_all), torch.cat(classes_all)
    keep = tv_batched_nms(boxes, scores, classes, model.test_nms_thresh)[
        : model.max_detections_per_image
    ]
    return boxes[keep], scores[keep], classes[keep]


@pytest.mark.parametrize("topk_by", ["score", "prob"])
def test_inference_matches_written_out_decoding(topk_by):
    model = build_tiny_atss()
    model.test_topk_by = topk_by
    model.test_score_thresh = 0.3
    model.test_topk_candidates = 7
    model.max_detections_per_image = 15
    g = torch.Generator().manual_seed(0)
    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    strides = [8, 16, 32, 64, 128]
    anchors = []
    for (h, w), s in zip(sizes, strides):
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        c = torch.stack([xs.flatten(), ys.flatten()], 1).float() * s + s / 2
        anchors.append(Boxes(torch.cat([c - 4 * s, c + 4 * s], 1)))
    logits = [torch.randn(h * w, 3, generator=g) for h, w in sizes]
    deltas = [torch.randn(h * w, 4, generator=g) for h, w in sizes]
    ctr = [torch.randn(h * w, 1, generator=g) for h, w in sizes]
    got = model.inference_single_image(anchors, logits, deltas, ctr, (64, 64))
    boxes, scores, classes = reference_inference(model, logits, deltas, ctr, anchors, topk_by)
    assert len(got) == len(boxes) > 0
    torch.testing.assert_close(got.scores, scores)
    torch.testing.assert_close(got.pred_boxes.tensor, boxes)
    assert torch.equal(got.pred_classes, classes)


@pytest.mark.parametrize("clip", [False, True])
def test_clip_before_nms(clip):
    # Zero deltas decode to the anchors themselves, so the boxes below are what enters NMS.
    # Image 50 high, 60 wide. A sticks out on the right; B is A's inside part (IoU 1/3 with A,
    # 1 once A is clipped); C lies entirely right of the image (zero width once clipped); D sticks
    # out at the top left.
    model = build_tiny_atss()
    model.test_clip_before_nms = clip
    boxes = torch.tensor(
        [[40.0, 10, 100, 40], [40, 10, 60, 40], [70, 5, 90, 20], [-10, -5, 20, 30]]
    )
    probs = torch.tensor([0.9, 0.8, 0.7, 0.6])
    logits = torch.full((4, 3), -30.0)
    logits[:, 0] = torch.log(probs / (1 - probs))
    ctr = torch.full((4, 1), 30.0)  # centerness 1
    got = model.inference_single_image(
        [Boxes(boxes)], [logits], [torch.zeros(4, 4)], [ctr], (50, 60)
    )
    if clip:  # MMDetection: B suppressed by the clipped A, C dropped as empty
        want_boxes = [[40.0, 10, 60, 40], [0, 0, 20, 30]]
        want_scores = [0.9, 0.6]
    else:  # the authors: all four survive NMS unclipped
        want_boxes = boxes.tolist()
        want_scores = probs.tolist()
    torch.testing.assert_close(got.pred_boxes.tensor, torch.tensor(want_boxes))
    torch.testing.assert_close(got.scores, torch.tensor(want_scores))
    assert got.pred_classes.tolist() == [0] * len(want_scores)


def test_topk_by_validated():
    from detectron2.config import instantiate

    from .d2_models import tiny_atss_config

    cfg = tiny_atss_config()
    cfg.test_topk_by = "logit"
    with pytest.raises(ValueError, match="test_topk_by 'logit'"):
        instantiate(cfg)


def _float16_predictions(seed=0):
    """One level of 3 anchors (3 classes) and float16 head outputs, as under CUDA autocast."""
    g = torch.Generator().manual_seed(seed)
    anchors = [Boxes(torch.tensor([[0.0, 0.0, 16.0, 16.0], [8, 8, 40, 40], [30, 0, 60, 20]]))]
    logits = [(torch.randn(1, 3, 3, generator=g) * 2).half()]
    deltas = [(torch.randn(1, 3, 4, generator=g) * 0.3).half()]
    ctr = [torch.randn(1, 3, 1, generator=g).half()]
    return anchors, logits, deltas, ctr


def test_losses_of_float16_predictions_use_float32_centerness_targets():
    model = build_tiny_atss()
    anchors, logits, deltas, ctr = _float16_predictions()
    labels = [torch.tensor([1, 3, 0])]  # anchor 1 is background (3 classes)
    # Centerness targets 0.4387... and 0.7745...: not float16 values.
    matched = [torch.tensor([[1.0, 2.0, 13.0, 11.0], [0, 0, 1, 1], [29.0, 1.0, 57.0, 23.0]])]
    out = model.losses(anchors, logits, labels, deltas, matched, ctr)
    assert all(v.dtype == torch.float32 for v in out.values())
    positives = [0, 2]
    centers = anchors[0].tensor[positives]
    centers = (centers[:, :2] + centers[:, 2:]) / 2
    box = matched[0][positives]
    lr = torch.stack([centers[:, 0] - box[:, 0], box[:, 2] - centers[:, 0]], 1)
    tb = torch.stack([centers[:, 1] - box[:, 1], box[:, 3] - centers[:, 1]], 1)
    target = ((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)).sqrt()
    assert not torch.equal(target.half().float(), target)
    logit = ctr[0][0, positives, 0].float()
    want = torch.nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="sum") / 2
    torch.testing.assert_close(out["loss_centerness"], want, rtol=1e-6, atol=0)


def test_inference_of_float16_predictions_scores_in_float32():
    # Under autocast the head gives float16; candidates are ranked and enter NMS in float32,
    # exactly as the same (float16-valued) predictions given in float32.
    model = build_tiny_atss()
    model.test_score_thresh = 0.2
    anchors, logits, deltas, ctr = _float16_predictions(seed=1)
    per_image = [x[0] for x in logits], [x[0] for x in deltas], [x[0] for x in ctr]
    got = model.inference_single_image(anchors, *per_image, (64, 64))
    assert got.scores.dtype == got.pred_boxes.tensor.dtype == torch.float32 and len(got) > 0
    as_float32 = [[t.float() for t in x] for x in per_image]
    want = model.inference_single_image(anchors, *as_float32, (64, 64))
    assert torch.equal(got.scores, want.scores)
    assert torch.equal(got.pred_boxes.tensor, want.pred_boxes.tensor)
    assert torch.equal(got.pred_classes, want.pred_classes)
