"""Tiny ATSS + DyHead models built with LazyCall, shared by the Detectron2 tests."""

from __future__ import annotations

import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.modeling.backbone.swin import SwinTransformer
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import Boxes, Instances

from dyhead_d2.atss import ATSSHead
from dyhead_d2.layers import DyHead
from dyhead_d2.modeling import ATSS, DyHeadBackbone

WIDTH = 32


def unregister_datasets(names=("synthetic_train", "synthetic_val")) -> None:
    """Forget datasets a test registered: registration is process-wide and would leak into the
    next test."""
    for name in names:
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)


def tiny_resnet(norm: str = "BN"):
    """A 4-stage ResNet with one BasicBlock per stage, 16 to 64 channels (strides 4..32)."""
    channels = [16, 16, 32, 48, 64]  # stem, res2..res5; a stride-2 BasicBlock needs in != out
    stages = [
        L(ResNet.make_stage)(
            block_class=BasicBlock,
            num_blocks=1,
            in_channels=channels[i],
            out_channels=channels[i + 1],
            stride_per_block=[1 if i == 0 else 2],
            norm=norm,
        )
        for i in range(4)
    ]
    return L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=channels[0], norm=norm),
        stages=stages,
        out_features=["res3", "res4", "res5"],
    )


def tiny_bottleneck_resnet(stride_in_1x1: bool):
    """Bottleneck ResNet, caffe/MSRA style (stride in the 1x1 conv) or torchvision style (3x3)."""
    channels = [16, 32, 64, 96, 128]
    stages = [
        L(ResNet.make_stage)(
            block_class=BottleneckBlock,
            num_blocks=1,
            in_channels=channels[i],
            out_channels=channels[i + 1],
            bottleneck_channels=channels[i + 1] // 4,
            stride_per_block=[1 if i == 0 else 2],
            stride_in_1x1=stride_in_1x1,
            norm="FrozenBN",
        )
        for i in range(4)
    ]
    return L(ResNet)(
        stem=L(BasicStem)(in_channels=3, out_channels=channels[0], norm="FrozenBN"),
        stages=stages,
        out_features=["res3", "res4", "res5"],
        freeze_at=2,
    )


def tiny_swin():
    """Detectron2's SwinTransformer with one block per stage and 16..128 channels."""
    return L(SwinTransformer)(
        embed_dim=16,
        depths=(1, 1, 1, 1),
        num_heads=(1, 2, 2, 4),
        window_size=4,
        drop_path_rate=0.0,
        out_indices=(1, 2, 3),
    )


BOTTOM_UPS = {
    "resnet_basic": (tiny_resnet, ["res3", "res4", "res5"]),
    # Batch-independent norm, for comparing one process with several.
    "resnet_frozen_bn": (lambda: tiny_resnet("FrozenBN"), ["res3", "res4", "res5"]),
    "resnet_caffe": (lambda: tiny_bottleneck_resnet(True), ["res3", "res4", "res5"]),
    "resnet_torchvision": (lambda: tiny_bottleneck_resnet(False), ["res3", "res4", "res5"]),
    "swin": (tiny_swin, ["p1", "p2", "p3"]),
}


def tiny_atss_config(
    num_classes: int = 3,
    num_blocks: int = 1,
    offset_mode: str = "official",
    bottom_up: str = "resnet_basic",
):
    """LazyConfig of a tiny ATSS + DyHead; ``instantiate`` it to get the model."""
    make_bottom_up, in_features = BOTTOM_UPS[bottom_up]
    return L(ATSS)(
        backbone=L(DyHeadBackbone)(
            fpn=L(FPN)(
                bottom_up=make_bottom_up(),
                in_features=in_features,
                out_channels=WIDTH,
                top_block=L(LastLevelP6P7)(in_channels=WIDTH, out_channels=WIDTH, in_feature="p5"),
            ),
            dyhead=L(DyHead)(
                in_channels=WIDTH,
                out_channels=WIDTH,
                num_blocks=num_blocks,
                offset_mode=offset_mode,
                dcn_bias=True,
                zero_init_offset=False,
                init_style="authors",
            ),
        ),
        head=L(ATSSHead)(
            in_channels=WIDTH,
            num_classes=num_classes,
            num_levels=5,
            num_convs=0,
            pred_kernel_size=1,
        ),
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=L(DefaultAnchorGenerator)(
            sizes=[[64], [128], [256], [512], [1024]],
            aspect_ratios=[1.0],
            strides=[8, 16, 32, 64, 128],
            offset=0.5,
        ),
        box2box_transform=L(Box2BoxTransform)(weights=(10.0, 10.0, 5.0, 5.0)),
        num_classes=num_classes,
        pixel_mean=[103.53, 116.28, 123.675],
        pixel_std=[57.375, 57.12, 58.395],
    )


def build_tiny_atss(seed: int = 0, **kw) -> ATSS:
    torch.manual_seed(seed)
    return instantiate(tiny_atss_config(**kw))


def make_input(
    height: int, width: int, boxes: list[list[float]], classes: list[int], seed: int = 0
) -> dict:
    """A dataset dict as Detectron2's DatasetMapper produces it, with boxes painted on the image."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 60, (3, height, width), generator=g).float()
    for (x0, y0, x1, y1), c in zip(boxes, classes):
        image[c % 3, int(y0) : int(y1), int(x0) : int(x1)] = 250.0
    inst = Instances((height, width))
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.int64)
    return {"image": image, "instances": inst, "height": height, "width": width}
