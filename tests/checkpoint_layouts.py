"""Foreign checkpoint layouts written out by hand, and the same tensors set on our modules by hand.

Each ``*_tower_and_head`` function spells out the names and shapes one port saves (read from its
code); each ``set_by_hand_*`` function puts those tensors on our modules attribute by attribute,
without the conversion code, so a converted model can be compared with it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "Randn",
    "authors_tower_and_head",
    "mmdet_tower_and_head",
    "set_by_hand_authors",
    "set_by_hand_mmdet",
]


class Randn:
    """Distinct random tensors from one seed: ``r(2, 3)`` ~ N(0, scale^2), and ``r.w(O, I, k, k)``
    a weight whose outputs have about ``gain`` times its inputs' scale (std gain / sqrt(fan-in)),
    so activations stay moderate however wide the layer."""

    def __init__(self, seed: int = 0, scale: float = 0.3):
        self.g = torch.Generator().manual_seed(seed)
        self.scale = scale

    def __call__(self, *shape) -> Tensor:
        return torch.randn(tuple(shape), generator=self.g) * self.scale

    def w(self, *shape, gain: float = 1.0) -> Tensor:
        fan_in = math.prod(shape[1:])
        return torch.randn(tuple(shape), generator=self.g) * (gain / math.sqrt(fan_in))


def authors_tower_and_head(
    r: Randn, channels: int, blocks: int, num_classes: int, num_levels: int
) -> dict[str, Tensor]:
    """The authors' DyHead tower and ATSS head (dyhead/dyhead.py, extra/atss.py)."""
    c, sd = channels, {}
    for i in range(blocks):
        t = f"backbone.dyhead_tower.{i}."
        for j in range(3):  # DyConv[0] high, [1] mid, [2] low (stride 2); DCN with bias, GN
            sd[t + f"DyConv.{j}.conv.weight"] = r.w(c, c, 3, 3)
            sd[t + f"DyConv.{j}.conv.bias"] = r(c)
            sd[t + f"DyConv.{j}.bn.weight"] = 1 + r(c)
            sd[t + f"DyConv.{j}.bn.bias"] = r(c)
        sd[t + "AttnConv.1.weight"] = r.w(1, c, 1, 1, gain=3.0)  # Sequential(pool, conv, relu)[1]
        sd[t + "AttnConv.1.bias"] = r(1)
        sd[t + "offset.weight"] = r.w(27, c, 3, 3, gain=2.0)
        sd[t + "offset.bias"] = r(27)
        sd[t + "relu.fc.0.weight"] = r.w(
            c // 4, c, gain=3.0
        )  # DYReLU: Sequential(Linear, ReLU, Linear, ..)
        sd[t + "relu.fc.0.bias"] = r(c // 4)
        sd[t + "relu.fc.2.weight"] = r.w(4 * c, c // 4, gain=3.0)
        sd[t + "relu.fc.2.bias"] = r(4 * c)
    for name, out in (("cls_logits", num_classes), ("bbox_pred", 4), ("centerness", 1)):
        sd[f"head.{name}.weight"] = r.w(out, c, 1, 1)
        sd[f"head.{name}.bias"] = r(out)
    for level in range(num_levels):
        sd[f"head.scales.{level}.scale"] = 1 + r(1)
    return sd


def mmdet_tower_and_head(
    r: Randn,
    channels: int,
    blocks: int,
    num_classes: int,
    num_levels: int,
    pred_kernel: int,
    dcn_bias: bool = False,
) -> dict[str, Tensor]:
    """MMDetection's DyHead neck and ATSS head (necks/dyhead.py, layers/se_layer.py DyReLU,
    dense_heads/atss_head.py with stacked_convs=0). ``dcn_bias``: the DCNs carry a bias, as
    mmcv's default ``bias=True`` of the pull-request branch that trained the first files."""
    c, k, sd = channels, pred_kernel, {}
    for i in range(blocks):
        n = f"neck.1.dyhead_blocks.{i}."
        for b in ("high", "mid", "low"):
            sd[n + f"spatial_conv_{b}.conv.weight"] = r.w(c, c, 3, 3)  # mmdet >= 2.22: no bias
            if dcn_bias:
                sd[n + f"spatial_conv_{b}.conv.bias"] = r(c)
            sd[n + f"spatial_conv_{b}.norm.weight"] = 1 + r(c)
            sd[n + f"spatial_conv_{b}.norm.bias"] = r(c)
        sd[n + "spatial_conv_offset.weight"] = r.w(27, c, 3, 3, gain=2.0)
        sd[n + "spatial_conv_offset.bias"] = r(27)
        sd[n + "scale_attn_module.1.weight"] = r.w(
            1, c, 1, 1, gain=3.0
        )  # Sequential(pool, conv, ..)[1]
        sd[n + "scale_attn_module.1.bias"] = r(1)
        sd[n + "task_attn_module.conv1.conv.weight"] = r.w(
            c // 4, c, 1, 1, gain=3.0
        )  # ConvModule 1x1
        sd[n + "task_attn_module.conv1.conv.bias"] = r(c // 4)
        sd[n + "task_attn_module.conv2.conv.weight"] = r.w(4 * c, c // 4, 1, 1, gain=3.0)
        sd[n + "task_attn_module.conv2.conv.bias"] = r(4 * c)
    for name, out in (("atss_cls", num_classes), ("atss_reg", 4), ("atss_centerness", 1)):
        sd[f"bbox_head.{name}.weight"] = r.w(out, c, k, k)
        sd[f"bbox_head.{name}.bias"] = r(out)
    for level in range(num_levels):
        sd[f"bbox_head.scales.{level}.scale"] = 1 + r()  # MMCV's Scale: a 0-d parameter
    return sd


@torch.no_grad()
def set_by_hand_authors(model, sd: dict[str, Tensor]) -> None:
    for i, block in enumerate(model.backbone.dyhead.blocks):
        t = f"backbone.dyhead_tower.{i}."
        for j, branch in enumerate((block.conv_high, block.conv_mid, block.conv_low)):
            branch.conv.weight.copy_(sd[t + f"DyConv.{j}.conv.weight"])
            branch.conv.bias.copy_(sd[t + f"DyConv.{j}.conv.bias"])
            branch.norm.weight.copy_(sd[t + f"DyConv.{j}.bn.weight"])
            branch.norm.bias.copy_(sd[t + f"DyConv.{j}.bn.bias"])
        block.scale_attn.conv.weight.copy_(sd[t + "AttnConv.1.weight"])
        block.scale_attn.conv.bias.copy_(sd[t + "AttnConv.1.bias"])
        block.offset_conv.weight.copy_(sd[t + "offset.weight"])
        block.offset_conv.bias.copy_(sd[t + "offset.bias"])
        block.task_attn.fc1.weight.copy_(sd[t + "relu.fc.0.weight"])
        block.task_attn.fc1.bias.copy_(sd[t + "relu.fc.0.bias"])
        block.task_attn.fc2.weight.copy_(sd[t + "relu.fc.2.weight"])
        block.task_attn.fc2.bias.copy_(sd[t + "relu.fc.2.bias"])
    head = model.head
    for name in ("cls_logits", "bbox_pred", "centerness"):
        getattr(head, name).weight.copy_(sd[f"head.{name}.weight"])
        getattr(head, name).bias.copy_(sd[f"head.{name}.bias"])
    for level, scale in enumerate(head.scales):
        scale.scale.copy_(sd[f"head.scales.{level}.scale"])


@torch.no_grad()
def set_by_hand_mmdet(model, sd: dict[str, Tensor]) -> None:
    for i, block in enumerate(model.backbone.dyhead.blocks):
        n = f"neck.1.dyhead_blocks.{i}."
        for b in ("high", "mid", "low"):
            branch = getattr(block, f"conv_{b}")
            branch.conv.weight.copy_(sd[n + f"spatial_conv_{b}.conv.weight"])
            if n + f"spatial_conv_{b}.conv.bias" in sd:
                branch.conv.bias.copy_(sd[n + f"spatial_conv_{b}.conv.bias"])
            branch.norm.weight.copy_(sd[n + f"spatial_conv_{b}.norm.weight"])
            branch.norm.bias.copy_(sd[n + f"spatial_conv_{b}.norm.bias"])
        block.offset_conv.weight.copy_(sd[n + "spatial_conv_offset.weight"])
        block.offset_conv.bias.copy_(sd[n + "spatial_conv_offset.bias"])
        block.scale_attn.conv.weight.copy_(sd[n + "scale_attn_module.1.weight"])
        block.scale_attn.conv.bias.copy_(sd[n + "scale_attn_module.1.bias"])
        attn = block.task_attn
        attn.fc1.weight.copy_(sd[n + "task_attn_module.conv1.conv.weight"][:, :, 0, 0])
        attn.fc1.bias.copy_(sd[n + "task_attn_module.conv1.conv.bias"])
        attn.fc2.weight.copy_(sd[n + "task_attn_module.conv2.conv.weight"][:, :, 0, 0])
        attn.fc2.bias.copy_(sd[n + "task_attn_module.conv2.conv.bias"])
    head = model.head
    for ours, theirs in (("cls_logits", "cls"), ("bbox_pred", "reg"), ("centerness", "centerness")):
        getattr(head, ours).weight.copy_(sd[f"bbox_head.atss_{theirs}.weight"])
        getattr(head, ours).bias.copy_(sd[f"bbox_head.atss_{theirs}.bias"])
    for level, scale in enumerate(head.scales):
        scale.scale.fill_(sd[f"bbox_head.scales.{level}.scale"].item())
