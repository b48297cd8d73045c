"""Every LazyConfig file loads, instantiates, runs, and states the published model's settings."""

import math
import runpy
from pathlib import Path

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

import detectron2  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.data.transforms import ResizeShortestEdge  # noqa: E402
from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.modeling.backbone.fpn import LastLevelMaxPool, LastLevelP6P7  # noqa: E402
from detectron2.modeling.meta_arch import GeneralizedRCNN, RetinaNet  # noqa: E402
from detectron2.modeling.meta_arch.fcos import FCOS  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from dyhead_d2 import DyHeadBlock  # noqa: E402
from dyhead_d2.config import ConfigError, load_config  # noqa: E402
from dyhead_d2.data.cv2_resize import ResizeShortestEdgeCV2  # noqa: E402
from dyhead_d2.layers import resolve_port  # noqa: E402
from dyhead_d2.modeling import ATSS, DeformBottleneckBlock, LastLevelP6P7NoReLU  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

R50_MSRA = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
R101_MSRA = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
X101_TORCHVISION = "https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth"
BGR_CAFFE = ([103.530, 116.280, 123.675], [1.0, 1.0, 1.0], "BGR")
RGB_IMAGENET = ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375], "RGB")

# Settings of the published models (README / reference table): what each config must state.
PUBLISHED = {
    "COCO/atss_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=ATSS,
        trainable=38_849_090,  # the authors' FREEZE_AT = -1: every parameter trains
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
        trainable=45_290_460,  # the authors' FREEZE_AT = -1: every parameter trains
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
    # The paper's backbone table (no released configs): the authors' ResNet recipe with their
    # Swin-T config's 2x multi-scale schedule, SGD's lr scaled to 32 images.
    "COCO/atss_dyhead_R_101_FPN_2x_ms.py": dict(
        meta=ATSS,
        ap=46.5,
        weights=R101_MSRA,
        pixel=BGR_CAFFE,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="score",
        batch=32,
        optimizer="SGD",
        lr=0.02,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(640, 672, 704, 736, 768, 800),
        test_size=800,
        max_size=1333,
        resnet=dict(depth=101, num_groups=1, width_per_group=64, stride_in_1x1=True),
        deform=[False, False, False, False],
        frozen_bn=True,
        train_step=True,
    ),
    "COCO/atss_dyhead_X_101_64x4d_FPN_2x_ms.py": dict(
        meta=ATSS,
        ap=47.7,
        weights=X101_TORCHVISION,
        pixel=RGB_IMAGENET,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="score",
        batch=32,
        optimizer="SGD",
        lr=0.02,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(640, 672, 704, 736, 768, 800),
        test_size=800,
        max_size=1333,
        resnet=dict(depth=101, num_groups=64, width_per_group=4, stride_in_1x1=False),
        deform=[False, False, False, False],
        frozen_bn=True,
        train_step=True,
    ),
    "COCO/atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms.py": dict(
        meta=ATSS,
        ap=54.0,  # COCO test-dev, multi-scale testing
        weights=X101_TORCHVISION,
        pixel=RGB_IMAGENET,
        port="authors",
        top_block=LastLevelP6P7,
        pad=128,
        pred_kernel=1,
        anchor_offset=0.5,
        topk_by="score",
        batch=32,
        optimizer="SGD",
        lr=0.02,
        wd=1e-4,
        max_iter=90000,
        steps=(60000, 80000),
        warmup=1000,
        train_sizes=(640, 672, 704, 736, 768, 800),
        test_size=800,
        max_size=1333,
        resnet=dict(depth=101, num_groups=64, width_per_group=4, stride_in_1x1=False),
        deform=[False, True, True, True],
        deform_modulated=True,
        frozen_bn=True,
        train_step=True,
    ),
    "COCO/fcos_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=FCOS,
        ap=None,  # no published FCOS + DyHead model
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
        train_step=True,
    ),
    "COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=GeneralizedRCNN,
        trainable=53_203_592,  # the authors' FREEZE_AT = -1: every parameter trains
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
    "COCO/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py": dict(
        meta=GeneralizedRCNN,
        trainable=55_846_872,  # the Faster R-CNN's and Detectron2's mask head (2,643,280)
        ap=None,  # no port published a Mask R-CNN + DyHead: the authors' Faster R-CNN recipe
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
    # MMDetection's released models read the high-branch offset and mask as the authors' kernel
    # does (mmcv's kernel reads the full-size maps by raw pointer): "official", not the
    # unreleased post-3.3.0 slice ("mmdet_main_slice").
    "mmdet_simple": dict(
        offset_mode="official", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
    ),
    "mmdet_repro": dict(
        offset_mode="official", dcn_bias=False, zero_init_offset=False, init_style="mmdet"
    ),
}


def test_every_config_file_is_covered():
    files = {str(p.relative_to(CONFIGS)) for p in CONFIGS.rglob("*.py")}
    models = {f for f in files if not f.startswith("common/")}
    custom = {f for f in files if f.startswith("custom/")}  # tests/test_custom_dataset.py
    assert models == set(PUBLISHED) | set(QUICKSTARTS) | custom


QUICKSTARTS = ["quickstart/atss_dyhead_synthetic.py", "quickstart/mask_rcnn_dyhead_synthetic.py"]


@pytest.mark.parametrize("name", sorted(PUBLISHED) + QUICKSTARTS)
def test_config_values_are_ones_detectron2s_own_tools_accept(name):
    # tools/lazyconfig_train_net.py calls model.to(train.device) and uses AMPTrainer, which
    # asserts CUDA, whenever train.amp.enabled: both must be resolved when the config loads.
    cfg = load_config(str(CONFIGS / name))
    assert cfg.train.device == ("cuda" if torch.cuda.is_available() else "cpu")
    torch.empty(0, device=cfg.train.device)
    assert cfg.train.amp.enabled in (False, torch.cuda.is_available())
    assert cfg.train.amp.cpu_bfloat16 in ("auto", False)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_config_states_published_settings(name):
    want = PUBLISHED[name]
    cfg = load_config(str(CONFIGS / name))
    assert want["weights"] in cfg.train.init_checkpoint
    assert cfg.train.max_iter == want["max_iter"]
    assert cfg.train.ddp.find_unused_parameters is True
    assert cfg.train.amp.enabled is False and cfg.train.clip_grad.enabled is False
    assert cfg.train.amp.cpu_bfloat16 is False  # float32 on CPU, as before it could be chosen
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
    (test_resize,) = cfg.dataloader.test.mapper.augmentations
    # MMDetection's simple setting resizes with mmcv's default, OpenCV; every other with Pillow
    # (Detectron2's ResizeShortestEdge; MMDetection's configs say backend='pillow').
    resizer = ResizeShortestEdgeCV2 if want["port"] == "mmdet_simple" else ResizeShortestEdge
    assert resize._target_ is resizer and test_resize._target_ is resizer
    assert tuple(resize.short_edge_length) == want["train_sizes"]
    assert resize.max_size == want["max_size"] and flip.horizontal
    assert test_resize.short_edge_length == want["test_size"]
    assert test_resize.max_size == want["max_size"]
    mean, std, fmt = want["pixel"]
    assert list(cfg.model.pixel_mean) == mean and list(cfg.model.pixel_std) == std
    # Detectron2's FCOS takes no input_format (its config deletes it): the loader's is the one.
    assert cfg.model.get("input_format", "BGR") == fmt == cfg.dataloader.train.mapper.image_format
    # The padding is a stated config value (None: the pyramid's largest stride).
    assert cfg.model.backbone.size_divisibility in (want["pad"], None)
    if "resnet" in want:
        stages = cfg.model.backbone.fpn.bottom_up.stages
        for key, value in want["resnet"].items():
            assert stages[key] == value, key
        assert list(stages.deform_on_per_stage) == want["deform"]
        if any(want["deform"]):
            assert stages.deform_modulated == want["deform_modulated"]
            assert stages.deform_num_groups == 1
    assert cfg.dataloader.evaluator._target_.__name__ == "COCOEvaluator"
    # DyHead: the port's explicit choices (the config's port, resolved as DyHead resolves it).
    dyhead = cfg.model.backbone.dyhead
    resolved = _resolved_port(dyhead)
    for key, value in PORTS[want["port"]].items():
        assert getattr(resolved, key) == value, key
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
        # MMDetection clips boxes to the image (and drops empty ones) before NMS, the authors after.
        assert m.test_clip_before_nms is want["port"].startswith("mmdet")


def _resolved_port(dyhead):
    """The DyHead port a config's ``model.backbone.dyhead`` node builds."""
    options = ("offset_mode", "dcn_bias", "zero_init_offset", "init_style")
    return resolve_port(dyhead.port, **{k: dyhead[k] for k in options})


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
    params = list(model.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    if want["port"] == "authors":
        # The authors freeze nothing (add_extra_config: MODEL.BACKBONE.FREEZE_AT = -1).
        assert all(p.requires_grad for p in params)
    else:
        # MMDetection's R-50 configs freeze the stem and res2 (frozen_stages=1); Swin-L nothing.
        stem_res2 = [
            p
            for n, p in model.backbone.fpn.bottom_up.named_parameters()
            if n.startswith(("stem.", "res2."))
        ]
        assert all(not p.requires_grad for p in stem_res2)
        assert trainable == sum(p.numel() for p in params) - sum(p.numel() for p in stem_res2)
    if "trainable" in want:
        assert trainable == want["trainable"]
    if want["weights"] == R50_MSRA or want.get("frozen_bn"):
        # MSRA caffe weights (and the authors' recipe on others): every BatchNorm of the ResNet
        # frozen, statistics and affine.
        norms = [m for m in model.backbone.fpn.bottom_up.modules() if "Norm" in type(m).__name__]
        assert norms and all(isinstance(m, FrozenBatchNorm2d) for m in norms)
    if "deform" in want:
        bottom_up = model.backbone.fpn.bottom_up
        stages = (bottom_up.res2, bottom_up.res3, bottom_up.res4, bottom_up.res5)
        for stage, on in zip(stages, want["deform"]):
            assert all(isinstance(b, DeformBottleneckBlock) == on for b in stage)
    model.eval()
    with torch.no_grad():
        out = model([{"image": torch.rand(3, 90, 120) * 255, "height": 45, "width": 60}])
    assert out[0]["instances"].image_size == (45, 60)
    if want.get("train_step"):
        _training_step(cfg, model)


def _training_step(cfg, model):
    """One step of the config's optimizer on one small image with two boxes: finite losses, and
    every trainable parameter that received a gradient changed (the deformable offset convs, zero
    at first, included)."""
    model.train()
    instances = Instances((128, 160))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 20.0, 70.0, 90.0], [60.0, 30.0, 150.0, 120.0]]))
    instances.gt_classes = torch.tensor([3, 7])
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    with EventStorage():
        losses = model([{"image": torch.rand(3, 128, 160) * 255, "instances": instances}])
    assert losses and all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()
    named = {n: p for n, p in model.named_parameters() if p.grad is not None and p.grad.any()}
    before = {n: p.detach().clone() for n, p in named.items()}
    optimizer.step()
    assert named
    unchanged = [n for n, p in named.items() if torch.equal(p.detach(), before[n])]
    assert not unchanged, unchanged[:5]
    offsets = [n for n in named if n.endswith("conv2_offset.weight")]
    deformable = [m for m in model.modules() if isinstance(m, DeformBottleneckBlock)]
    assert len(offsets) == len(deformable)


FAST = sorted(n for n in PUBLISHED if "swin_L" not in n)


@pytest.mark.parametrize("name", FAST)
def test_config_model_instantiates_and_runs(name):
    _instantiate_and_run(name)


@pytest.mark.slow
def test_swin_large_config_instantiates_and_runs():
    _instantiate_and_run("COCO/atss_dyhead_swin_L_FPN_2x_ms.py")


def test_swin_t_config_decays_biases_as_the_authors_builder():
    # The authors' builder: weight decay WEIGHT_DECAY_BIAS (1e-4 in the Detectron2 of 2021) for
    # every parameter whose name contains "bias", WEIGHT_DECAY (0.05) for the rest; lr unchanged.
    cfg = load_config(str(CONFIGS / "COCO/atss_dyhead_swin_T_FPN_2x_ms.py"))
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    lrs = {g["lr"] for g in optimizer.param_groups}
    assert lrs == {1e-4}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(decay) == len(names) == len(list(model.parameters()))
    kinds = set()
    for name, p in model.named_parameters():
        want = 1e-4 if "bias" in name else 0.05
        assert decay[id(p)] == want, name
        kinds.add(name.rsplit(".", 1)[-1])
    # Every kind of parameter the rule must reach is there.
    assert {"bias", "relative_position_bias_table", "weight", "scale"} <= kinds
    assert any(
        "norm" in n and n.endswith("weight") and decay[id(p)] == 0.05
        for n, p in model.named_parameters()
    )


MMDET_CONFIGS = [n for n, want in sorted(PUBLISHED.items()) if want["port"].startswith("mmdet")]


@pytest.mark.parametrize("name", MMDET_CONFIGS)
def test_mmdet_config_high_branch_reads_each_images_first_values(name):
    # MMDetection's released models: per image, the high branch's deformable conv reads the first
    # 18*h*w offset values and the first 9*h*w (sigmoid) mask values of level l's full-size maps,
    # as mmcv's kernel indexes offset[b] / mask[b] by raw pointer at the output size.
    args = _resolved_port(load_config(str(CONFIGS / name)).model.backbone.dyhead)
    assert args.offset_mode == "official"
    torch.manual_seed(0)
    block = DyHeadBlock(
        16,
        16,
        offset_mode=args.offset_mode,
        dcn_bias=args.dcn_bias,
        zero_init_offset=False,  # a zero offset conv would make every reading equal
        init_style=args.init_style,
        deform_impl="torchvision",  # the per-level path, whose conv_high call we record
    )
    with torch.no_grad():
        block.offset_conv.weight.normal_(0.0, 0.5)
    seen = []
    conv_high_forward = block.conv_high.forward
    block.conv_high.forward = lambda x, offset, mask: (
        seen.append((offset, mask)) or (conv_high_forward(x, offset, mask))
    )
    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(2, 16, h, w, generator=g) for h, w in ((9, 13), (5, 7))]
    with torch.no_grad():
        block(feats)
        full = block.offset_conv(feats[0])  # level 0's (N, 27, 9, 13) offset-and-mask map
    (offset, mask), h, w = seen[0], 5, 7
    for b in range(2):
        want_offset = full[b, :18].reshape(-1)[: 18 * h * w].view(18, h, w)
        want_mask = full[b, 18:].sigmoid().reshape(-1)[: 9 * h * w].view(9, h, w)
        torch.testing.assert_close(offset[b], want_offset, rtol=0, atol=0)
        torch.testing.assert_close(mask[b], want_mask, rtol=0, atol=0)
        # ... which is not the top-left corner (the unreleased post-3.3.0 slice's mask).
        assert not torch.allclose(mask[b], full[b, 18:, :h, :w].sigmoid())


def test_common_model_leaves_port_choices_unset():
    # The shared pieces must not pick a port silently: a config that forgets fails to load. The
    # port's four choices are one key, model.backbone.dyhead.port.
    path = CONFIGS / "common" / "models" / "atss_dyhead.py"
    with pytest.raises(ConfigError, match=r"model\.backbone\.dyhead\.port"):
        load_config(str(path))


def test_a_port_option_given_on_the_command_line_replaces_the_ports_value():
    # The four options stay config keys: one of them overrides the preset's value alone.
    name = "COCO/atss_dyhead_R_50_caffe_FPN_1x.py"
    overrides = ["model.backbone.dyhead.offset_mode=aligned", "model.backbone.dyhead.num_blocks=1"]
    cfg = load_config(str(CONFIGS / name), overrides)
    dyhead = instantiate(cfg.model.backbone.dyhead)
    want = dict(PORTS["authors"], offset_mode="aligned")
    assert {k: getattr(dyhead.port, k) for k in want} == want
    assert dyhead.blocks[0].offset_mode == "aligned"
    assert dyhead.blocks[0].conv_mid.conv.bias is not None  # the rest is still the authors'
    # Without a port, all four are needed; the error names the missing ones.
    cfg.model.backbone.dyhead.port = None
    with pytest.raises(TypeError, match="missing: dcn_bias, zero_init_offset, init_style"):
        instantiate(cfg.model.backbone.dyhead)


def test_retinanet_faster_rcnn_mask_rcnn_and_fcos_configs_are_detectron2s_own_models():
    # Detectron2's common/models files, read from the installed package (no pkg_resources), with
    # the DyHead backbone put in (and, for Faster R-CNN, the mask branch taken out).
    zoo = Path(detectron2.__file__).resolve().parent / "model_zoo" / "configs" / "common" / "models"
    for name, theirs, dropped in [
        ("retinanet", "retinanet.py", ()),
        ("faster_rcnn", "mask_rcnn_fpn.py", ("mask_in_features", "mask_pooler", "mask_head")),
        ("fcos", "fcos.py", ()),
        ("mask_rcnn", "mask_rcnn_fpn.py", ()),
    ]:
        ours = load_config(str(CONFIGS / f"COCO/{name}_dyhead_R_50_caffe_FPN_1x.py")).model
        d2 = LazyConfig.load(str(zoo / theirs)).model
        assert ours.backbone._target_.__name__ == "DyHeadBackbone"
        for key in dropped:
            assert key in d2.roi_heads and key not in ours.roi_heads
            d2.roi_heads.pop(key)
        ours.pop("backbone"), d2.pop("backbone")
        plain = OmegaConf.to_container(ours), OmegaConf.to_container(d2)
        assert {k: v for k, v in plain[0].items() if k in plain[1]} == plain[1], name


def test_detectron2_config_names_a_missing_file():
    load = runpy.run_path(str(CONFIGS / "common" / "detectron2_zoo.py"))["detectron2_config"]
    with pytest.raises(FileNotFoundError, match="'common/models/nope.py' is not at .*model_zoo"):
        load("common/models/nope.py")


def test_fcos_reads_the_dyhead_levels():
    # Detectron2's FCOS takes its anchor points from the backbone's strides and its levels by
    # name: DyHead's P3-P7 (strides 8-128), so FCOS's size ranges are its paper's (0-64, 64-128,
    # 128-256, 256-512, 512-inf px).
    cfg = load_config(
        str(CONFIGS / "COCO/fcos_dyhead_R_50_caffe_FPN_1x.py"),
        ["model.backbone.dyhead.num_blocks=1"],
    )
    model = instantiate(cfg.model)
    shapes = model.backbone.output_shape()
    assert model.head_in_features == ["p3", "p4", "p5", "p6", "p7"] == list(shapes)
    assert [shapes[f].stride for f in model.head_in_features] == [8, 16, 32, 64, 128]
    assert list(model.anchor_generator.strides) == [8, 16, 32, 64, 128]
    # One anchor point per location, a box of the stride's size (what FCOS's ranges are 4x, 8x).
    cells = [c.tolist() for c in model.anchor_generator.cell_anchors]
    assert cells == [[[-s / 2, -s / 2, s / 2, s / 2]] for s in (8, 16, 32, 64, 128)]
    assert model.backbone.size_divisibility == 128


def test_mask_and_faster_rcnn_configs_differ_by_the_mask_branch_only():
    # One recipe: the Faster R-CNN config is the Mask R-CNN config without the mask branch and
    # without masks in the train loader (Detectron2's mask head, polygons from COCO).
    mask = load_config(str(CONFIGS / "COCO/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py"))
    faster = load_config(str(CONFIGS / "COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py"))
    assert mask.dataloader.train.mapper.use_instance_mask is True
    assert mask.dataloader.train.mapper.get("instance_mask_format", "polygon") == "polygon"
    assert faster.dataloader.train.mapper.use_instance_mask is False
    assert mask.model.roi_heads.mask_head.conv_dims == [256] * 5
    for key in ("mask_in_features", "mask_pooler", "mask_head"):
        mask.model.roi_heads.pop(key)
    mask.dataloader.train.mapper.use_instance_mask = False
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert OmegaConf.to_yaml(mask[key]) == OmegaConf.to_yaml(faster[key]), key
