"""The authors' and MMDetection's detector checkpoints onto our COCO configs, end to end.

Each test writes a checkpoint in the foreign layout (names and shapes as that port saves them),
converts it into the model of the config that reproduces it, loads it strictly and compares the
model with one whose modules were set from the same tensors by hand (and, for MMDetection's
ResNets, with torchvision's ResNet, which has MMDetection's names).
"""

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from dyhead_d2.checkpoint import CheckpointConversionError, convert_checkpoint  # noqa: E402

from .checkpoint_layouts import (  # noqa: E402
    Randn,
    authors_tower_and_head,
    set_by_hand_authors,
    set_by_hand_mmdet,
)
from .coco_detectors import (  # noqa: E402
    BLOCKS,
    FASTER_RCNN_HEADS,
    NUM_CLASSES,
    RETINANET_HEAD,
    SMALL,
    build,
    calibrate_norms_,
    image,
    mmdet_checkpoint,
    randomise_,
    torchvision_resnet50,
)


@torch.no_grad()
def outputs(model, batch=None):
    """DyHead levels, head outputs and detections (before rescaling) for one image."""
    images = model.preprocess_image(batch or image())
    feats = model.backbone(images.tensor)
    levels = [feats[f] for f in model.head_in_features]
    head = model.head(levels)
    (inst,) = model.forward_inference(images, levels, head)
    return [*levels, *[t for per_level in head for t in per_level]], inst


def assert_same_outputs(a, b):
    """Equal DyHead levels, head outputs and detections; and every level depends on the image
    (so a tensor in the wrong place could not go unnoticed)."""
    (ta, ia), (tb, ib) = outputs(a), outputs(b)
    other, _ = outputs(a, image(seed=4))
    for level in range(5):
        assert (ta[level] - other[level]).abs().max() > 1e-2
    assert len(ta) == len(tb)
    for x, y in zip(ta, tb):
        assert torch.equal(x, y)
    assert len(ia) > 0 and len(ia) == len(ib)  # the head's biases are large enough to detect
    assert torch.equal(ia.pred_boxes.tensor, ib.pred_boxes.tensor)
    assert torch.equal(ia.scores, ib.scores) and torch.equal(ia.pred_classes, ib.pred_classes)


# ---------------------------------------------------------------------------------------------
# The authors' ATSS (dyhead_r50_atss_fpn_1x.pth) -> atss_dyhead_R_50_caffe_FPN_1x.py


def authors_atss_checkpoint(config: str):
    """Their file: Detectron2's ResNet + FPN under ``backbone.backbone.`` (they build those with
    Detectron2, so the names are Detectron2's), then their DyHead tower and head."""
    r = Randn(7)
    source = build(config, SMALL, seed=100)
    images = source.preprocess_image(image()).tensor
    calibrate_norms_(source.backbone.fpn.bottom_up, images, r)
    sd = {"backbone.backbone." + k: v for k, v in source.backbone.fpn.state_dict().items()}
    sd.update(authors_tower_and_head(r, 256, BLOCKS, NUM_CLASSES, num_levels=5))
    sd["head.cls_logits.bias"] = torch.full((NUM_CLASSES,), 0.5)
    return {"model": sd, "iteration": 89999}


def test_authors_atss():
    config = "atss_dyhead_R_50_caffe_FPN_1x.py"
    ckpt = authors_atss_checkpoint(config)
    converted = build(config, SMALL, seed=0)
    conversion = convert_checkpoint(ckpt, converted)
    assert conversion.source == "authors"
    assert not conversion.dropped and not conversion.filled and not conversion.left_unfilled
    converted.load_state_dict(conversion.state_dict, strict=True)

    by_hand = build(config, SMALL, seed=1)
    sd = ckpt["model"]
    prefix = "backbone.backbone."
    fpn = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    by_hand.backbone.fpn.load_state_dict(fpn, strict=True)
    set_by_hand_authors(by_hand, sd)
    assert_same_outputs(converted, by_hand)


def test_authors_atss_mistakes_are_all_listed():
    model = build("atss_dyhead_R_50_caffe_FPN_1x.py", SMALL)
    sd = authors_atss_checkpoint("atss_dyhead_R_50_caffe_FPN_1x.py")["model"]
    del sd["backbone.backbone.bottom_up.res4.2.conv2.norm.running_var"]
    sd["backbone.backbone.fpn_lateral2.weight"] = torch.zeros(256, 256, 1, 1)  # no P2 here
    sd["head.cls_subnet.0.weight"] = torch.zeros(256, 256, 3, 3)  # a RetinaNet head
    sd["backbone.dyhead_tower.1.offset.weight"] = torch.zeros(18, 256, 3, 3)
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(sd, model, source="authors")
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert any(
        "backbone.backbone.fpn_lateral2.weight -> backbone.fpn.fpn_lateral2" in p for p in problems
    )
    assert any("head.cls_subnet.0.weight -> head.cls_subnet.0.weight" in p for p in problems)
    assert any(
        "blocks.1.offset_conv.weight: checkpoint (18, 256, 3, 3), model (27, 256, 3, 3)" in p
        for p in problems
    )
    assert any(p.endswith("bottom_up.res4.2.conv2.norm.running_var") for p in problems)


# ---------------------------------------------------------------------------------------------
# The authors' RetinaNet, Faster R-CNN and Swin-T: Detectron2's own heads, their tower.


@pytest.mark.parametrize(
    "config, heads, attribute",
    [
        ("retinanet_dyhead_R_50_caffe_FPN_1x.py", RETINANET_HEAD, "head.cls_score.weight"),
        (
            "faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
            FASTER_RCNN_HEADS,
            "roi_heads.box_head.fc1.weight",
        ),
        (
            "atss_dyhead_swin_T_FPN_2x_ms.py",
            None,
            "backbone.fpn.bottom_up.layers.2.blocks.5.attn.qkv.weight",
        ),
    ],
)
def test_authors_other_detectors(config, heads, attribute):
    overrides = ["model.backbone.dyhead.num_blocks=1"]
    model = build(config, overrides)
    r = Randn(11)
    sd = randomise_(
        {"backbone.backbone." + k: v for k, v in model.backbone.fpn.state_dict().items()}, r
    )
    tower = authors_tower_and_head(r, 256, 1, 80, 5)
    sd.update({k: v for k, v in tower.items() if k.startswith("backbone.")})
    if heads is None:  # ATSS: their head
        sd.update({k: v for k, v in tower.items() if k.startswith("head.")})
    else:
        sd.update({k: r(*shape) for k, shape in heads.items()})
    conversion = convert_checkpoint({"model": sd}, model)
    model.load_state_dict(conversion.state_dict, strict=True)
    want = sd[attribute.replace("backbone.fpn.", "backbone.backbone.")]
    assert torch.equal(model.get_parameter(attribute), want)
    assert torch.equal(
        model.backbone.dyhead.blocks[0].conv_low.norm.bias,
        sd["backbone.dyhead_tower.0.DyConv.2.bn.bias"],
    )


def test_a_checkpoint_for_another_detector_is_refused():
    atss = authors_atss_checkpoint("atss_dyhead_R_50_caffe_FPN_1x.py")
    retinanet = build(
        "retinanet_dyhead_R_50_caffe_FPN_1x.py", [f"model.backbone.dyhead.num_blocks={BLOCKS}"]
    )
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(atss, retinanet)
    msg = str(err.value)
    assert "model has no key for head.cls_logits.weight" in msg
    assert "not filled by the checkpoint: head.cls_subnet.0.weight" in msg


# ---------------------------------------------------------------------------------------------
# MMDetection's R-50 "simple" (pytorch style) and "reproduction" (caffe style).


@torch.no_grad()
def set_fpn_by_hand_mmdet(model, sd):
    fpn = model.backbone.fpn
    for k, level in enumerate((3, 4, 5)):
        getattr(fpn, f"fpn_lateral{level}").weight.copy_(
            sd[f"neck.0.lateral_convs.{k}.conv.weight"]
        )
        getattr(fpn, f"fpn_lateral{level}").bias.copy_(sd[f"neck.0.lateral_convs.{k}.conv.bias"])
        getattr(fpn, f"fpn_output{level}").weight.copy_(sd[f"neck.0.fpn_convs.{k}.conv.weight"])
        getattr(fpn, f"fpn_output{level}").bias.copy_(sd[f"neck.0.fpn_convs.{k}.conv.bias"])
    for k, conv in ((3, fpn.top_block.p6), (4, fpn.top_block.p7)):
        conv.weight.copy_(sd[f"neck.0.fpn_convs.{k}.conv.weight"])
        conv.bias.copy_(sd[f"neck.0.fpn_convs.{k}.conv.bias"])


@pytest.mark.parametrize(
    "config, caffe, pred_kernel",
    [("atss_dyhead_R_50_FPN_1x.py", False, 3), ("atss_dyhead_R_50_caffe_FPN_1x_mmdet.py", True, 1)],
    ids=["simple", "reproduction"],
)
def test_mmdet_r50(config, caffe, pred_kernel):
    converted = build(config, SMALL, seed=0)
    net = torchvision_resnet50(caffe, converted.preprocess_image(image()).tensor)
    ckpt = mmdet_checkpoint(net, pred_kernel)
    conversion = convert_checkpoint(ckpt, converted)
    assert conversion.source == "mmdet" and not conversion.filled
    # Detectron2's FrozenBN built as such keeps no batch counter (one converted from BN does).
    counters = [k for k in conversion.dropped if k.endswith("num_batches_tracked")]
    assert len(counters) == (53 if caffe else 0)
    converted.load_state_dict(conversion.state_dict, strict=True)

    # The ResNet computes what MMDetection's (= torchvision's names and math) computes.
    x = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = converted.backbone.fpn.bottom_up(x)
        y = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        y = net.layer1(y)
        for name, layer in (("res3", net.layer2), ("res4", net.layer3), ("res5", net.layer4)):
            y = layer(y)
            torch.testing.assert_close(ours[name], y, rtol=1e-4, atol=1e-4)

    by_hand = build(config, SMALL, seed=1)
    by_hand.backbone.fpn.bottom_up.load_state_dict(converted.backbone.fpn.bottom_up.state_dict())
    set_fpn_by_hand_mmdet(by_hand, ckpt["state_dict"])
    set_by_hand_mmdet(by_hand, ckpt["state_dict"])
    assert_same_outputs(converted, by_hand)
