"""Fine-tuning a detector of other classes: everything loads but the class-dependent tensors,
which keep their initialisation from scratch, each named in one log line; any other mismatch
fails with the full list."""

import logging
import math

import pytest
import torch

from . import needs_detectron2

needs_detectron2()

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.box_regression import Box2BoxTransform  # noqa: E402
from detectron2.modeling.meta_arch.retinanet import RetinaNetHead  # noqa: E402
from detectron2.modeling.roi_heads import FastRCNNOutputLayers  # noqa: E402

from dyhead_d2.checkpoint import CheckpointConversionError, DyHeadCheckpointer  # noqa: E402
from dyhead_d2.checkpoint.classes import class_dependent_keys  # noqa: E402

from .checkpoint_layouts import Randn, authors_tower_and_head  # noqa: E402
from .d2_models import WIDTH, build_tiny_atss  # noqa: E402

CLASS_KEYS = ("head.cls_logits.weight", "head.cls_logits.bias")
PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def load(model, path, **kw):
    checkpointer = DyHeadCheckpointer(model, **kw)
    handler = Lines()
    checkpointer.logger.addHandler(handler)
    old_level = checkpointer.logger.level
    checkpointer.logger.setLevel(logging.INFO)
    try:
        checkpointer.load(str(path))
    finally:
        checkpointer.logger.removeHandler(handler)
        checkpointer.logger.setLevel(old_level)
    return handler.lines


def assert_fine_tuned(model, fresh, source_state):
    """Every tensor of ``model`` is the checkpoint's except the classifier, which is ``fresh``'s
    (the same model before loading: its initialisation from scratch)."""
    state = model.state_dict()
    for key, value in state.items():
        if key in CLASS_KEYS:
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, source_state[key]), key
    assert state["head.cls_logits.weight"].shape[0] == 3
    assert torch.allclose(state["head.cls_logits.bias"], torch.full((3,), PRIOR_BIAS))
    assert 0.005 < state["head.cls_logits.weight"].std() < 0.015  # N(0, 0.01)


def skipped_lines(lines):
    return [line for line in lines if line.startswith("Not loading ")]


def test_own_checkpoint_to_other_classes(tmp_path):
    source = build_tiny_atss(seed=1, num_classes=5)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.1)  # nothing equals an initialisation
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("five")
    model = build_tiny_atss(seed=2, num_classes=3)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    lines = load(model, tmp_path / "five.pth", allow_new_classes=True)
    assert_fine_tuned(model, fresh, source.state_dict())
    assert skipped_lines(lines) == [
        "Not loading head.cls_logits.weight: ATSS classifier, its size depends on the number of "
        "classes: checkpoint (5, 32, 1, 1), model (3, 32, 1, 1); it keeps its initialisation "
        "from scratch (fine-tuning to another number of classes)",
        "Not loading head.cls_logits.bias: ATSS classifier, its size depends on the number of "
        "classes: checkpoint (5,), model (3,); it keeps its initialisation from scratch "
        "(fine-tuning to another number of classes)",
    ]
    # Nothing else is reported missing: the skipped tensors are not "not found" too.
    assert not [line for line in lines if "not found in the checkpoint" in line]


def test_without_allow_new_classes_another_classifier_is_refused(tmp_path):
    # --eval-only and the tools: a checkpoint of other classes is an error, not a random
    # classifier evaluated.
    DetectionCheckpointer(build_tiny_atss(num_classes=5), save_dir=str(tmp_path)).save("five")
    with pytest.raises(CheckpointConversionError, match=r"head.cls_logits.weight: checkpoint \(5"):
        DyHeadCheckpointer(build_tiny_atss(num_classes=3)).load(str(tmp_path / "five.pth"))


def test_other_mismatches_still_fail_with_the_full_list(tmp_path):
    source = build_tiny_atss(seed=1, num_classes=5)
    sd = source.state_dict()
    sd["backbone.fpn.fpn_lateral3.weight"] = torch.zeros(WIDTH, 7, 1, 1)
    sd["head.bbox_pred.bias"] = torch.zeros(5)
    torch.save({"model": sd}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointConversionError) as err:
        load(build_tiny_atss(num_classes=3), tmp_path / "bad.pth", allow_new_classes=True)
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert any("backbone.fpn.fpn_lateral3.weight" in p for p in problems)
    assert any("head.bbox_pred.bias: checkpoint (5,), model (4,)" in p for p in problems)


def test_a_detector_checkpoint_must_fill_the_whole_model(tmp_path):
    # E.g. a checkpoint of a model with fewer DyHead blocks: refused, not half loaded.
    source = build_tiny_atss(seed=1, num_classes=5, num_blocks=1)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("one_block")
    sd = source.state_dict()
    sd["head.extra.weight"] = torch.zeros(3)
    torch.save({"model": sd}, tmp_path / "extra.pth")
    model = build_tiny_atss(num_classes=3, num_blocks=2)
    with pytest.raises(CheckpointConversionError) as err:
        load(model, tmp_path / "one_block.pth", allow_new_classes=True)
    missing = [p for p in err.value.problems if p.startswith("model key not filled")]
    assert len(missing) == len([k for k in model.state_dict() if ".blocks.1." in k]) > 0
    assert len(err.value.problems) == len(missing)
    with pytest.raises(
        CheckpointConversionError, match="checkpoint key not in the model: head.extra"
    ):
        load(
            build_tiny_atss(num_classes=3, num_blocks=1),
            tmp_path / "extra.pth",
            allow_new_classes=True,
        )


def authors_checkpoint(model, num_classes, r):
    sd = {"backbone.backbone." + k: r(*v.shape) for k, v in model.backbone.fpn.state_dict().items()}
    for k in [k for k in sd if k.endswith("running_var")]:
        sd[k] = sd[k].abs() + 0.5
    sd.update(authors_tower_and_head(r, WIDTH, 1, num_classes, num_levels=5))
    return sd


def test_authors_coco_detector_to_other_classes(tmp_path):
    model = build_tiny_atss(seed=2, num_classes=3)
    sd = authors_checkpoint(model, 80, Randn(5))
    torch.save({"model": sd}, tmp_path / "coco.pth")
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    lines = load(model, tmp_path / "coco.pth", allow_new_classes=True)
    # The same file for a model of 80 classes is the reference conversion.
    reference = build_tiny_atss(seed=3, num_classes=80)
    DyHeadCheckpointer(reference).load(str(tmp_path / "coco.pth"))
    want = {k: v for k, v in reference.state_dict().items()}
    assert_fine_tuned(model, fresh, want)
    block = model.backbone.dyhead.blocks[0]
    assert torch.equal(
        block.conv_mid.conv.weight, sd["backbone.dyhead_tower.0.DyConv.1.conv.weight"]
    )
    assert [line.split(":")[0] for line in skipped_lines(lines)] == [
        "Not loading head.cls_logits.weight",
        "Not loading head.cls_logits.bias",
    ]
    assert "checkpoint (80, 32, 1, 1), model (3, 32, 1, 1)" in skipped_lines(lines)[0]


def test_without_allow_new_classes_a_converted_checkpoint_stays_strict(tmp_path):
    model = build_tiny_atss(num_classes=3)
    torch.save({"model": authors_checkpoint(model, 80, Randn(5))}, tmp_path / "coco.pth")
    with pytest.raises(CheckpointConversionError, match="shape mismatch: head.cls_logits.weight"):
        DyHeadCheckpointer(model).load(str(tmp_path / "coco.pth"))


@pytest.mark.slow  # two R-50 detectors of each kind
@pytest.mark.parametrize(
    "config, heads, num_classes, class_shapes",
    [
        (
            "retinanet_dyhead_R_50_caffe_FPN_1x.py",
            "retinanet",
            "model.num_classes=3",
            {"head.cls_score.weight": (9 * 3, 256, 3, 3), "head.cls_score.bias": (9 * 3,)},
        ),
        (
            "faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
            "faster_rcnn",
            "model.roi_heads.num_classes=3",
            {
                "roi_heads.box_predictor.cls_score.weight": (3 + 1, 1024),
                "roi_heads.box_predictor.cls_score.bias": (3 + 1,),
                "roi_heads.box_predictor.bbox_pred.weight": (3 * 4, 1024),
                "roi_heads.box_predictor.bbox_pred.bias": (3 * 4,),
            },
        ),
    ],
    ids=["retinanet", "faster_rcnn"],
)
def test_authors_coco_retinanet_and_faster_rcnn_to_other_classes(
    tmp_path, config, heads, num_classes, class_shapes
):
    """The authors' COCO RetinaNet / Faster R-CNN file loaded into the config's model for 3
    classes: the class-dependent tensors are skipped (and say so) and keep their initialisation
    from scratch; every other tensor is the one the same file gives the 80-class model."""
    from .coco_detectors import FASTER_RCNN_HEADS, RETINANET_HEAD, build, randomise_

    one_block = ["model.backbone.dyhead.num_blocks=1"]
    reference = build(config, one_block, seed=0)  # COCO's 80 classes
    r = Randn(11)
    sd = {"backbone.backbone." + k: v for k, v in reference.backbone.fpn.state_dict().items()}
    sd = randomise_(sd, r)
    tower = authors_tower_and_head(r, 256, 1, 80, 5)
    sd.update({k: v for k, v in tower.items() if k.startswith("backbone.")})
    head = {"retinanet": RETINANET_HEAD, "faster_rcnn": FASTER_RCNN_HEADS}[heads]
    sd.update({k: r(*shape) for k, shape in head.items()})
    torch.save({"model": sd}, tmp_path / "coco.pth")
    DyHeadCheckpointer(reference).load(str(tmp_path / "coco.pth"))
    want = reference.state_dict()

    model = build(config, [*one_block, num_classes], seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    lines = load(model, tmp_path / "coco.pth", allow_new_classes=True)
    skipped = [line.split(":")[0].removeprefix("Not loading ") for line in skipped_lines(lines)]
    assert sorted(skipped) == sorted(class_shapes)
    state = model.state_dict()
    for key, value in state.items():
        if key in class_shapes:
            assert tuple(value.shape) == class_shapes[key], key
            assert torch.equal(value, fresh[key]), key  # its initialisation, untouched
        else:
            assert torch.equal(value, want[key]), key
    # Loaded, not only named: the reference took every other tensor from the file.
    assert torch.equal(
        state["backbone.dyhead.blocks.0.conv_mid.conv.weight"],
        sd["backbone.dyhead_tower.0.DyConv.1.conv.weight"],
    )
    some_head_key = next(k for k in head if k not in class_shapes)
    assert torch.equal(state[some_head_key], sd[some_head_key])
    assert not [line for line in lines if "not found in the checkpoint" in line]


def test_class_dependent_keys_of_detectron2_heads():
    retina = RetinaNetHead(
        input_shape=[ShapeSpec(channels=8)] * 2, num_classes=4, num_anchors=9, conv_dims=[8]
    )
    fast = FastRCNNOutputLayers(
        ShapeSpec(channels=16), box2box_transform=Box2BoxTransform((10, 10, 5, 5)), num_classes=4
    )
    model = torch.nn.ModuleDict({"head": retina, "roi_heads": torch.nn.ModuleDict({"p": fast})})
    assert class_dependent_keys(model) == {
        "head.cls_score.weight": "RetinaNet classifier",
        "head.cls_score.bias": "RetinaNet classifier",
        "roi_heads.p.cls_score.weight": "Fast R-CNN classifier",
        "roi_heads.p.cls_score.bias": "Fast R-CNN classifier",
        "roi_heads.p.bbox_pred.weight": "Fast R-CNN class-specific box deltas",
        "roi_heads.p.bbox_pred.bias": "Fast R-CNN class-specific box deltas",
    }
    assert set(class_dependent_keys(build_tiny_atss())) == set(CLASS_KEYS)


@pytest.mark.slow  # an R-50 detector and torchvision's ResNet-50
def test_mmdet_coco_detector_to_other_classes(tmp_path):
    from .coco_detectors import NUM_CLASSES, build, image, mmdet_checkpoint, torchvision_resnet50

    config, small = "atss_dyhead_R_50_caffe_FPN_1x_mmdet.py", ["model.backbone.dyhead.num_blocks=2"]
    reference = build(config, [*small, f"model.num_classes={NUM_CLASSES}"], seed=0)
    net = torchvision_resnet50(True, reference.preprocess_image(image()).tensor)
    ckpt = mmdet_checkpoint(net, pred_kernel=1)
    torch.save(ckpt, tmp_path / "mmdet.pth")
    DyHeadCheckpointer(reference).load(str(tmp_path / "mmdet.pth"))
    model = build(config, [*small, "model.num_classes=7"], seed=1)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    lines = load(model, tmp_path / "mmdet.pth", allow_new_classes=True)
    for key, value in model.state_dict().items():
        want = fresh[key] if key in CLASS_KEYS else reference.state_dict()[key]
        assert torch.equal(value, want), key
    assert model.head.cls_logits.weight.shape[0] == 7
    assert torch.allclose(model.head.cls_logits.bias, torch.full((7,), PRIOR_BIAS))
    assert [line.split(":")[0] for line in skipped_lines(lines)] == [
        "Not loading head.cls_logits.weight",
        "Not loading head.cls_logits.bias",
    ]


# ---------------------------------------------------------------------------------------------
# Faster R-CNN and Mask R-CNN: the small quickstart model, with and without its mask branch.

MASK_QUICKSTART = "configs/quickstart/mask_rcnn_dyhead_synthetic.py"
BOX_KEYS = (
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
)
MASK_KEYS = ("roi_heads.mask_head.predictor.weight", "roi_heads.mask_head.predictor.bias")


def build_rcnn(num_classes, *, masks=True, seed=0, agnostic_masks=False):
    """The mask quickstart's model with ``num_classes`` (Faster R-CNN: ``masks=False``;
    ``agnostic_masks``: one mask for every class, as Detectron2's CLS_AGNOSTIC_MASK)."""
    from pathlib import Path

    from detectron2.config import instantiate

    from dyhead_d2.config import load_config

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(str(root / MASK_QUICKSTART), [f"model.roi_heads.num_classes={num_classes}"])
    if agnostic_masks:
        cfg.model.roi_heads.mask_head.num_classes = 1
    if not masks:
        for key in ("mask_in_features", "mask_pooler", "mask_head"):
            cfg.model.roi_heads.pop(key)
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * (seed + 1))  # nothing equals an initialisation, or another seed's
    return model


def fresh_and_load(model, path, **kw):
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    return fresh, load(model, path, **kw)


def assert_loaded(model, fresh, source, kept_fresh):
    """Every tensor is the checkpoint's, except those ``kept_fresh`` says (a key or a prefix),
    which are ``fresh``'s: the model as initialised."""
    for key, value in model.state_dict().items():
        if key in kept_fresh or key.startswith(tuple(k for k in kept_fresh if k.endswith("."))):
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, source[key]), key


def test_mask_rcnn_checkpoint_to_other_classes(tmp_path):
    source = build_rcnn(5, seed=1)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("five")
    model = build_rcnn(3, seed=2)
    fresh, lines = fresh_and_load(model, tmp_path / "five.pth", allow_new_classes=True)
    assert_loaded(model, fresh, source.state_dict(), set(BOX_KEYS + MASK_KEYS))
    assert model.roi_heads.mask_head.predictor.weight.shape[0] == 3
    skipped = skipped_lines(lines)
    assert [line.split(":")[0] for line in skipped] == [
        f"Not loading {k}" for k in BOX_KEYS + MASK_KEYS
    ]
    assert skipped[4] == (
        "Not loading roi_heads.mask_head.predictor.weight: Mask R-CNN class-specific mask "
        "predictor, its size depends on the number of classes: checkpoint (5, 64, 1, 1), model "
        "(3, 64, 1, 1); it keeps its initialisation from scratch (fine-tuning to another number "
        "of classes)"
    )
    assert "(6, 256), model (4, 256)" in skipped[0]  # 5 classes + background
    assert "(20, 256), model (12, 256)" in skipped[2]  # class-specific box deltas
    assert not [line for line in lines if "not found in the checkpoint" in line]


def test_faster_rcnn_checkpoint_to_mask_rcnn_of_other_classes(tmp_path):
    # A box detector (e.g. the authors' Faster R-CNN) fine-tuned to masks: its mask head starts
    # from scratch, in one line.
    source = build_rcnn(5, masks=False, seed=1)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("boxes")
    model = build_rcnn(3, seed=2)
    fresh, lines = fresh_and_load(model, tmp_path / "boxes.pth", allow_new_classes=True)
    assert_loaded(model, fresh, source.state_dict(), {*BOX_KEYS, "roi_heads.mask_head."})
    mask_tensors = [k for k in model.state_dict() if k.startswith("roi_heads.mask_head.")]
    assert len(mask_tensors) >= 10  # 4 convs with GroupNorm, the deconv, the predictor
    skipped = skipped_lines(lines)
    assert [line.split(":")[0] for line in skipped] == [
        *[f"Not loading {k}" for k in BOX_KEYS],
        "Not loading roi_heads.mask_head",
    ]
    assert skipped[-1] == (
        f"Not loading roi_heads.mask_head: Mask R-CNN mask head ({len(mask_tensors)} tensors), "
        "which the checkpoint does not have (a box detector's); it keeps its initialisation "
        "from scratch"
    )
    assert not [line for line in lines if "not found in the checkpoint" in line]
    # Box to box works as before, and evaluation (no fine-tuning) stays strict.
    boxes = build_rcnn(3, masks=False, seed=2)
    fresh, lines = fresh_and_load(boxes, tmp_path / "boxes.pth", allow_new_classes=True)
    assert_loaded(boxes, fresh, source.state_dict(), set(BOX_KEYS))
    with pytest.raises(CheckpointConversionError, match="cls_score.weight: checkpoint \\(6"):
        DyHeadCheckpointer(build_rcnn(3)).load(str(tmp_path / "boxes.pth"))


def test_a_partial_mask_head_is_not_a_box_detector(tmp_path):
    # Only a branch the checkpoint has nothing of may start from scratch.
    source = build_rcnn(5, seed=1)
    sd = source.state_dict()
    del sd["roi_heads.mask_head.mask_fcn1.weight"]
    torch.save({"model": sd}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointConversionError) as err:
        load(build_rcnn(3), tmp_path / "partial.pth", allow_new_classes=True)
    assert err.value.problems == [
        "model key not filled by the checkpoint: roi_heads.mask_head.mask_fcn1.weight"
    ]


def test_class_agnostic_mask_predictor_loads(tmp_path):
    source = build_rcnn(5, seed=1, agnostic_masks=True)
    DetectionCheckpointer(source, save_dir=str(tmp_path)).save("agnostic")
    model = build_rcnn(3, seed=2, agnostic_masks=True)
    assert model.roi_heads.mask_head.predictor.weight.shape[0] == 1
    fresh, lines = fresh_and_load(model, tmp_path / "agnostic.pth", allow_new_classes=True)
    assert_loaded(model, fresh, source.state_dict(), set(BOX_KEYS))
    assert len(skipped_lines(lines)) == len(BOX_KEYS)


def test_authors_faster_rcnn_to_mask_rcnn_of_other_classes(tmp_path):
    # The authors' released Faster R-CNN layout (converted on load) into the COCO Mask R-CNN
    # config with 3 classes: the R-50, FPN, DyHead, RPN and box head come from the file.
    from .coco_detectors import FASTER_RCNN_HEADS, build, randomise_

    small = ["model.backbone.dyhead.num_blocks=1"]
    model = build(
        "mask_rcnn_dyhead_R_50_caffe_FPN_1x.py", [*small, "model.roi_heads.num_classes=3"]
    )
    r = Randn(11)
    sd = randomise_(
        {"backbone.backbone." + k: v for k, v in model.backbone.fpn.state_dict().items()}, r
    )
    tower = authors_tower_and_head(r, 256, 1, 80, 5)
    sd.update({k: v for k, v in tower.items() if k.startswith("backbone.")})
    sd.update({k: r(*shape) for k, shape in FASTER_RCNN_HEADS.items()})
    torch.save({"model": sd}, tmp_path / "authors_rcnn.pth")
    fresh, lines = fresh_and_load(model, tmp_path / "authors_rcnn.pth", allow_new_classes=True)
    state = model.state_dict()
    for key, value in state.items():
        if key in BOX_KEYS or key.startswith("roi_heads.mask_head."):
            assert torch.equal(value, fresh[key]), key
    assert torch.equal(state["roi_heads.box_head.fc1.weight"], sd["roi_heads.box_head.fc1.weight"])
    assert torch.equal(
        state["backbone.fpn.bottom_up.res4.2.conv2.weight"],
        sd["backbone.backbone.bottom_up.res4.2.conv2.weight"],
    )
    assert torch.equal(
        model.backbone.dyhead.blocks[0].conv_mid.conv.weight,
        sd["backbone.dyhead_tower.0.DyConv.1.conv.weight"],
    )
    assert [line.split(":")[0] for line in skipped_lines(lines)] == [
        *[f"Not loading {k}" for k in BOX_KEYS],
        "Not loading roi_heads.mask_head",
    ]
    assert "checkpoint (81, 1024), model (4, 1024)" in skipped_lines(lines)[0]
