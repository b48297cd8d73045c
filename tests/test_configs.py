"""Every LazyConfig file loads, instantiates, runs, and states the published model's settings."""

import math
from pathlib import Path

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7  # noqa: E402
from detectron2.modeling.meta_arch import GeneralizedRCNN, RetinaNet  # noqa: E402

from dyhead_d2.engine import ConfigError, load_config  # noqa: E402
from dyhead_d2.modeling import ATSS, LastLevelP6P7NoReLU  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

R50_MSRA = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
BGR_CAFFE = ([103.530, 116.280, 123.675], [1.0, 1.0, 1.0], "BGR")
RGB_IMAGENET = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], "RGB")

# Settings of the published models (README / reference table): what each config must state.
PUBLISHED = {
    "COCO/atss_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=ATSS,
        ap=42.4,
        weights=R50_MSRA,
        pixel=BGR_CAFFE,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="score",
        batch=16,
        optimizer="SGD",
        lr=0.01,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(800,),
        test_size=800,
        max_size=1333,
    ),
    "COCO/atss_dyhead_R_50_FPN_1x.py": dict(
        meta=ATSS,
        ap=43.3,
        weights="https://download.pytorch.org/models/resnet50-0676ba61.pth",
        pixel=RGB_IMAGENET,
        port="mmdet_simple",
        top_block=LastLevelP6P7NoReLU,
        pad=32,
        pred_kernel=3,
        anchor_offset=0.0,
        topk_by="prob",
        batch=16,
        optimizer="SGD",
        lr=0.01,
        wd=1e-4,
        max_iter=87960,
        steps=(58640, 80630),
        warmup=500,
        train_sizes=(800,),
        test_size=800,
        max_size=1333,
    ),
    "COCO/atss_dyhead_R_50_caffe_FPN_1x_mmdet.py": dict(
        meta=ATSS,
        ap=42.5,
        weights=R50_MSRA,
        pixel=BGR_CAFFE,
        port="mmdet_repro",
        top_block=LastLevelP6P7NoReLU,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="prob",
        batch=16,
        optimizer="SGD",
        lr=0.01,
        wd=1e-4,
        max_iter=87960,
        steps=(58640, 80630),
        warmup=500,
        train_sizes=(800,),
        test_size=800,
        max_size=1333,
    ),
    "COCO/atss_dyhead_swin_T_FPN_2x_ms.py": dict(
        meta=ATSS,
        ap=49.8,
        weights="swin_tiny_patch4_window7_224.pth",
        pixel=RGB_IMAGENET,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="score",
        batch=32,
        optimizer="AdamW",
        lr=1e-4,
        wd=0.05,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(640, 672, 704, 736, 768, 800),
        test_size=800,
        max_size=1333,
    ),
    "COCO/atss_dyhead_swin_L_FPN_2x_ms.py": dict(
        meta=ATSS,
        ap=56.2,
        weights="swin_large_patch4_window12_384_22k.pth",
        pixel=RGB_IMAGENET,
        port="mmdet_repro",
        top_block=LastLevelP6P7NoReLU,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="prob",
        batch=16,
        optimizer="AdamW",
        lr=5e-5,
        wd=0.05,
        max_iter=175920,
        steps=(117280, 161260),
        warmup=500,
        train_sizes=(480, 1200),
        test_size=1200,
        max_size=2000,
    ),
    "COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=RetinaNet,
        ap=39.9,
        weights=R50_MSRA,
        pixel=BGR_CAFFE,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        batch=16,
        optimizer="SGD",
        lr=0.01,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(800,),
        test_size=800,
        max_size=1333,
    ),
    "COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=GeneralizedRCNN,
        ap=40.3,
        weights=R50_MSRA,
        pixel=BGR_CAFFE,
        port="authors",
        top_block=LastLevelMaxPool,
        pad=64,
        batch=16,
        optimizer="SGD",
        lr=0.02,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(800,),
        test_size=800,
        max_size=1333,
    ),
}

PORTS = {
    "authors": dict(
        offset_mode="official", dcn_bias=True, zero_init_offset=False, init_style="authors"
    ),
    "mmdet_simple": dict(
        offset_mode="mmcv", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
    ),
    "mmdet_repro": dict(
        offset_mode="mmcv", dcn_bias=False, zero_init_offset=False, init_style="mmdet"
    ),
}


def test_every_config_file_is_covered():
    files = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.py")}
    models = {f for f in files if not f.startswith("common/")}
    custom = {f for f in files if f.startswith("custom/")}  # tests/test_custom_dataset.py
    assert models == set(PUBLISHED) | {"quickstart/atss_dyhead_synthetic.py"} | custom


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_states_published_settings(name):
    want = PUBLISHED[name]
    cfg = load_config(str(CONFIGS / name))
    assert want["weights"] in cfg.train.init_checkpoint
    assert cfg.train.max_iter == want["max_iter"]
    assert cfg.train.ddp.find_unused_parameters is True
    assert cfg.train.amp.enabled is False and cfg.train.clip_grad.enabled is False
    assert cfg.train.device == "auto"
    # Optimizer: every parameter decays (authors / MMDetection defaults), except where the
    # MMDetection Swin-L config exempts norms and position tables.
    assert cfg.optimizer._target_.__name__ == want["optimizer"]
    assert math.isclose(cfg.optimizer.lr, want["lr"]) and cfg.optimizer.weight_decay == want["wd"]
    if want["optimizer"] == "SGD":
        assert cfg.optimizer.momentum == 0.9 and cfg.optimizer.params.weight_decay_norm is None
    # Schedule: multi-step x0.1, linear warm-up from 0.001.
    milestones = cfg.lr_multiplier.scheduler.milestones
    assert tuple(milestones[:-1]) == want["steps"] and milestones[-1] == want["max_iter"]
    assert list(cfg.lr_multiplier.scheduler["values"]) == pytest.approx([1.0, 0.1, 0.01])
    assert round(cfg.lr_multiplier.warmup_length * want["max_iter"]) == want["warmup"]
    assert cfg.lr_multiplier.warmup_method == "linear"
    assert cfg.lr_multiplier.warmup_factor == 0.001
    # Data.
    assert cfg.dataloader.train.total_batch_size == want["batch"]
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == "coco_2017_val"
    resize, flip = cfg.dataloader.train.mapper.augmentations
    assert tuple(resize.short_edge_length) == want["train_sizes"]
    assert resize.max_size == want["max_size"] and flip.horizontal
    (test_resize,) = cfg.dataloader.test.mapper.augmentations
    assert test_resize.short_edge_length == want["test_size"]
    assert test_resize.max_size == want["max_size"]
    mean, std, fmt = want["pixel"]
    assert list(cfg.model.pixel_mean) == mean and list(cfg.model.pixel_std) == std
    assert cfg.model.input_format == fmt == cfg.dataloader.train.mapper.image_format
    assert cfg.dataloader.evaluator._target_.__name__ == "COCOEvaluator"
    # DyHead: the port's explicit choices.
    dyhead = cfg.model.backbone.dyhead
    for key, value in PORTS[want["port"]].items():
        assert dyhead[key] == value, key
    assert dyhead.num_blocks == 6 and dyhead.in_channels == dyhead.out_channels == 256
    # ATSS specifics.
    if want["meta"] is ATSS:
        m = cfg.model
        assert m.head.num_convs == 0 and m.head.pred_kernel_size == want["pred_kernel"]
        assert m.head.prior_prob == 0.01
        assert [list(s) for s in m.anchor_generator.sizes] == [[64], [128], [256], [512], [1024]]
        assert list(m.anchor_generator.aspect_ratios) == [1.0]
        assert m.anchor_generator.offset == want["anchor_offset"]
        assert tuple(m.box2box_transform.weights) == (10.0, 10.0, 5.0, 5.0)
        assert m.anchor_topk == 9 and m.focal_loss_alpha == 0.25 and m.focal_loss_gamma == 2.0
        assert m.box_reg_loss_weight == 2.0
        assert m.test_score_thresh == 0.05 and m.test_topk_candidates == 1000
        assert m.test_topk_by == want["topk_by"] and m.test_nms_thresh == 0.6
        assert m.max_detections_per_image == 100 and m.num_classes == 80


def _instantiate_and_run(name):
    want = PUBLISHED[name]
    cfg = load_config(str(CONFIGS / name))
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    assert isinstance(model, want["meta"])
    assert model.backbone.size_divisibility == want["pad"]
    assert isinstance(model.backbone.fpn.top_block, want["top_block"])
    block = model.backbone.dyhead.blocks[0]
    assert len(model.backbone.dyhead.blocks) == 6
    assert block.offset_mode == PORTS[want["port"]]["offset_mode"]
    assert (block.conv_mid.conv.bias is not None) == PORTS[want["port"]]["dcn_bias"]
    zero_offset = bool((block.offset_conv.weight == 0).all())
    assert zero_offset == PORTS[want["port"]]["zero_init_offset"]
    if want["weights"] == R50_MSRA:
        # MSRA caffe weights: every BatchNorm of the ResNet frozen, statistics and affine.
        norms = [m for m in model.backbone.fpn.bottom_up.modules() if "Norm" in type(m).__name__]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 90, 120) * 255, "height": 45, "width": 60}])
    assert out[0]["instances"].image_size == (45, 60)


FAST = sorted(n for n in PUBLISHED if "swin_L" not in n)


@pytest.mark.parametrize("name", FAST)
def test_config_model_instantiates_and_runs(name):
    _instantiate_and_run(name)


@pytest.mark.slow
def test_swin_large_config_instantiates_and_runs():
    _instantiate_and_run("COCO/atss_dyhead_swin_L_FPN_2x_ms.py")


def test_common_model_leaves_port_choices_unset():
    # The shared pieces must not pick a port silently: a config that forgets fails to load.
    path = CONFIGS / "common" / "models" / "atss_dyhead.py"
    with pytest.raises(ConfigError, match="offset_mode"):
        load_config(str(path))
