"""Names of MMDetection's ATSS + DyHead detectors -> this project's.

MMDetection's ``ATSS`` is ``backbone`` -> ``neck = [FPN, DyHead]`` -> ``bbox_head``. With
``N = neck.1.dyhead_blocks.<i>.`` (theirs) and ``D = backbone.dyhead.blocks.<i>.`` (ours)::

    backbone.<ResNet: conv1, bn1, layer<s>...>    -> backbone.fpn.bottom_up.<see .backbones>
    backbone.<Swin: patch_embed.projection, stages.<i>.blocks.<j>.attn.w_msa, ffn.layers.0.0,
        ffn.layers.1>                             -> backbone.fpn.bottom_up.<patch_embed.proj,
                                                     layers.<i>.blocks.<j>.attn, mlp.fc1, mlp.fc2>
    neck.0.lateral_convs.<k>.conv.*               -> backbone.fpn.fpn_lateral<level k>.*
    neck.0.fpn_convs.<k>.conv.*  (k < #laterals)  -> backbone.fpn.fpn_output<level k>.*
    neck.0.fpn_convs.<#laterals + 0|1>.conv.*     -> backbone.fpn.top_block.p6|p7.*
    N spatial_conv_high|mid|low.conv|norm.*       -> D conv_high|mid|low.conv|norm.*
    N spatial_conv_offset.*                       -> D offset_conv.*
    N scale_attn_module.1.*                       -> D scale_attn.conv.*
    N task_attn_module.conv1|conv2.conv.*         -> D task_attn.fc1|fc2.*  (1x1 conv -> Linear)
    bbox_head.atss_cls|atss_reg|atss_centerness.* -> head.cls_logits|bbox_pred|centerness.*
    bbox_head.scales.<l>.scale  (shape ())        -> head.scales.<l>.scale  (shape (1,))

``<level k>`` is the k-th pyramid level of the model's FPN, fine to coarse (P3, P4, P5 for every
config here). MMDetection's Swin merges patches with ``nn.Unfold``, which orders the 4 x C merged
channels differently from the official Swin and Detectron2; the PatchMerging ``reduction`` and
``norm`` weights are permuted back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import Tensor

from .backbones import resnet_key
from .mapping import CheckpointConversionError, KeyMap, conv1x1_to_linear, scalar_to_vector

__all__ = [
    "DCN_BIAS_OVERRIDE",
    "check_dcn_bias",
    "has_dcn_bias",
    "mmdet_key_map",
    "unfold_to_swin_order",
]

# The config override that builds DyHead's deformable convolutions with a bias.
DCN_BIAS_OVERRIDE = "model.backbone.dyhead.dcn_bias=True"

_BLOCK = r"neck\.1\.dyhead_blocks\.(?P<i>\d+)\."
_DYHEAD_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            _BLOCK + r"spatial_conv_(?P<b>high|mid|low)\.(?P<m>conv|norm)\.(?P<p>weight|bias)"
        ),
        "blocks.{i}.conv_{b}.{m}.{p}",
    ),
    (re.compile(_BLOCK + r"spatial_conv_offset\.(?P<p>weight|bias)"), "blocks.{i}.offset_conv.{p}"),
    (
        re.compile(_BLOCK + r"scale_attn_module\.1\.(?P<p>weight|bias)"),
        "blocks.{i}.scale_attn.conv.{p}",
    ),
    (
        re.compile(_BLOCK + r"task_attn_module\.conv(?P<n>[12])\.conv\.(?P<p>weight|bias)"),
        "blocks.{i}.task_attn.fc{n}.{p}",
    ),
]
_DCN_BIAS = re.compile(_BLOCK + r"spatial_conv_(high|mid|low)\.conv\.bias")
_MODEL_DCN_BIAS = re.compile(r"backbone\.dyhead\.blocks\.\d+\.conv_(high|mid|low)\.conv\.bias")
_HEAD = re.compile(r"bbox_head\.atss_(?P<m>cls|reg|centerness)\.(?P<p>weight|bias)")
_HEAD_NAMES = {"cls": "cls_logits", "reg": "bbox_pred", "centerness": "centerness"}
_SCALE = re.compile(r"bbox_head\.scales\.(?P<l>\d+)\.scale")
_LATERAL = re.compile(r"neck\.0\.lateral_convs\.(?P<k>\d+)\.conv\.(?P<p>weight|bias)")
_FPN_CONV = re.compile(r"neck\.0\.fpn_convs\.(?P<k>\d+)\.conv\.(?P<p>weight|bias)")
_MODEL_LATERAL = re.compile(r"backbone\.fpn\.fpn_lateral(?P<level>\d+)\.weight")

_SWIN_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"patch_embed\.projection\.(?P<p>weight|bias)"), "patch_embed.proj.{p}"),
    (re.compile(r"patch_embed\.norm\.(?P<p>weight|bias)"), "patch_embed.norm.{p}"),
    (
        re.compile(r"stages\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.attn\.w_msa\.(?P<rest>.+)"),
        "layers.{s}.blocks.{b}.attn.{rest}",
    ),
    (
        re.compile(
            r"stages\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.ffn\.layers\.0\.0\.(?P<p>weight|bias)"
        ),
        "layers.{s}.blocks.{b}.mlp.fc1.{p}",
    ),
    (
        re.compile(r"stages\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.ffn\.layers\.1\.(?P<p>weight|bias)"),
        "layers.{s}.blocks.{b}.mlp.fc2.{p}",
    ),
    (
        re.compile(r"stages\.(?P<s>\d+)\.blocks\.(?P<b>\d+)\.(?P<n>norm[12])\.(?P<p>weight|bias)"),
        "layers.{s}.blocks.{b}.{n}.{p}",
    ),
    (re.compile(r"(?P<n>norm\d+)\.(?P<p>weight|bias)"), "{n}.{p}"),
    (re.compile(r"absolute_pos_embed"), "absolute_pos_embed"),
]
_SWIN_MERGE = re.compile(
    r"stages\.(?P<s>\d+)\.downsample\.(?P<m>reduction|norm)\.(?P<p>weight|bias)"
)


def unfold_to_swin_order(t: Tensor) -> Tensor:
    """Reorder the merged-patch axis of a PatchMerging ``reduction`` weight (O, 4C) or ``norm``
    parameter (4C,) from MMDetection's ``nn.Unfold`` order to the official Swin order.

    Unfold yields channel-major features ``c * 4 + k`` with the 2x2 patch taps ``k`` in the order
    (0, 0), (0, 1), (1, 0), (1, 1) (row, column); Swin concatenates whole taps, ``k * C + c``, in
    the order (0, 0), (1, 0), (0, 1), (1, 1).
    """
    lead = t.shape[:-1]
    c = t.shape[-1] // 4
    taps = t.reshape(*lead, c, 4).transpose(-1, -2)  # (..., 4, C) in unfold tap order
    return taps[..., [0, 2, 1, 3], :].reshape(*lead, 4 * c)


def _swin_key(key: str) -> KeyMap | None:
    m = _SWIN_MERGE.fullmatch(key)
    if m:
        return KeyMap(
            "layers.{s}.downsample.{m}.{p}".format(**m.groupdict()), transform=unfold_to_swin_order
        )
    for pattern, template in _SWIN_RULES:
        m = pattern.fullmatch(key)
        if m:
            return KeyMap(template.format(**m.groupdict()))
    return None


def has_dcn_bias(state_dict: Iterable[str]) -> bool:
    """Whether an MMDetection DyHead state dict has biases on its deformable convolutions.

    mmdet >= 2.22 builds them without (``bias = not with_norm``); the pull-request branch that
    trained the first released files used mmcv's default ``bias=True``, so either layout may come.
    """
    return any(_DCN_BIAS.fullmatch(k) for k in state_dict)


def check_dcn_bias(state_dict: Iterable[str], model_keys: Iterable[str]) -> None:
    """Refuse, in one line that says how to fix it, a file whose DCN biases the model lacks (or
    the reverse), rather than a list of per-key problems.

    Raises:
        CheckpointConversionError
    """
    in_file = has_dcn_bias(state_dict)
    in_model = any(_MODEL_DCN_BIAS.fullmatch(k) for k in model_keys)
    if in_file and not in_model:
        raise CheckpointConversionError(
            "mmdet",
            [
                "the file's DyHead deformable convolutions have biases "
                "(neck.1.dyhead_blocks.*.spatial_conv_*.conv.bias) and the model's have none: "
                f"build the model with {DCN_BIAS_OVERRIDE}"
            ],
        )
    if in_model and not in_file:
        raise CheckpointConversionError(
            "mmdet",
            [
                "the model's DyHead deformable convolutions have biases and the file's have none "
                "(no neck.1.dyhead_blocks.*.spatial_conv_*.conv.bias): build the model with "
                "model.backbone.dyhead.dcn_bias=False"
            ],
        )


def mmdet_key_map(model_keys: Iterable[str]):
    """Key map of an MMDetection ATSS + DyHead state dict onto a model with keys ``model_keys``
    (which fix the FPN level of each of MMDetection's positional FPN convolutions)."""
    levels = sorted(int(m.group("level")) for k in model_keys if (m := _MODEL_LATERAL.fullmatch(k)))
    outputs = [f"fpn_output{level}" for level in levels] + ["top_block.p6", "top_block.p7"]

    def key_map(key: str) -> KeyMap | None:
        if key.startswith("backbone."):
            body = key[len("backbone.") :]
            name = resnet_key(body)
            if name is not None:
                return KeyMap("backbone.fpn.bottom_up." + name)
            m = _swin_key(body)
            if m is not None:
                return KeyMap("backbone.fpn.bottom_up." + m.target, transform=m.transform)
            return None
        for pattern, template in _DYHEAD_RULES:
            m = pattern.fullmatch(key)
            if m:
                transform = conv1x1_to_linear if "task_attn" in template else None
                return KeyMap("backbone.dyhead." + template.format(**m.groupdict()), transform)
        m = _HEAD.fullmatch(key)
        if m:
            return KeyMap(f"head.{_HEAD_NAMES[m.group('m')]}.{m.group('p')}")
        m = _SCALE.fullmatch(key)
        if m:
            return KeyMap(f"head.scales.{m.group('l')}.scale", transform=scalar_to_vector)
        m = _LATERAL.fullmatch(key)
        if m:
            k = int(m.group("k"))
            level = levels[k] if k < len(levels) else f"<none: the model has {len(levels)}>"
            return KeyMap(f"backbone.fpn.fpn_lateral{level}.{m.group('p')}")
        m = _FPN_CONV.fullmatch(key)
        if m:
            k = int(m.group("k"))
            name = outputs[k] if k < len(outputs) else f"<extra level {k}: none in the model>"
            return KeyMap(f"backbone.fpn.{name}.{m.group('p')}")
        return None

    return key_map
