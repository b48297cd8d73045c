"""Tiny ATSS + DyHead models, the shipped model config shrunk, shared by the Detectron2 tests."""

from __future__ import annotations

import copy
import functools

import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.modeling.backbone.swin import SwinTransformer
from detectron2.structures import Boxes, Instances

from dyhead_d2.model_zoo import get_config_file
from dyhead_d2.modeling import ATSS

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
    """LazyConfig of a tiny ATSS + DyHead; ``instantiate`` it to get the model.

    The model of ``configs/common/models/atss_dyhead.py`` (its head, anchors, box coding and test
    settings), shrunk: a tiny bottom-up network, ``WIDTH`` channels, ``num_blocks`` DyHead
    blocks with the authors' parameters and initialisation (offsets not zeroed, so that they
    matter), and a per-channel pixel std.
    """
    make_bottom_up, in_features = BOTTOM_UPS[bottom_up]
    model = copy.deepcopy(_atss_dyhead_model())
    fpn = model.backbone.fpn
    fpn.bottom_up = make_bottom_up()
    fpn.in_features = in_features
    fpn.out_channels = WIDTH
    fpn.top_block.in_channels = fpn.top_block.out_channels = WIDTH
    dyhead = model.backbone.dyhead
    dyhead.in_channels = dyhead.out_channels = WIDTH
    dyhead.num_blocks = num_blocks
    dyhead.port = None  # the four options below, stated one by one
    dyhead.offset_mode = offset_mode
    dyhead.dcn_bias = True
    dyhead.zero_init_offset = False
    dyhead.init_style = "authors"
    model.head.in_channels = WIDTH
    model.num_classes = num_classes
    model.pixel_std = [57.375, 57.12, 58.395]
    return model


@functools.cache
def _atss_dyhead_model():
    return LazyConfig.load(get_config_file("common/models/atss_dyhead.py")).model


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
