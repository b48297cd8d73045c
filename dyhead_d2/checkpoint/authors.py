"""Names of the authors' Detectron2 port (github.com/microsoft/DynamicHead) -> this project's.

Their detectors are Detectron2 models whose backbone is ``DyHead(backbone=FPN)``. With
``T = backbone.dyhead_tower.<i>.`` (theirs) and ``D = backbone.dyhead.blocks.<i>.`` (ours)::

    backbone.backbone.<rest> (ResNet or Swin, FPN)  -> backbone.fpn.<rest>
    T DyConv.0|1|2.conv.{weight,bias}               -> D conv_high|conv_mid|conv_low.conv.*
    T DyConv.0|1|2.bn.{weight,bias}                 -> D conv_high|conv_mid|conv_low.norm.*
    T AttnConv.1.*   (conv in Sequential(pool, conv, relu))  -> D scale_attn.conv.*
    T offset.*                                      -> D offset_conv.*
    T relu.fc.0.*, relu.fc.2.*  (Linear)            -> D task_attn.fc1.*, task_attn.fc2.*
    head.*, proposal_generator.*, roi_heads.*       -> unchanged
    pixel_mean, pixel_std, anchor cell_anchors      -> dropped (the config defines them)

Their ATSS head's names are ours; RetinaNet and Faster R-CNN are Detectron2's own. Their Swin-T
backbone (``extra/swint.py``) uses the names of Detectron2's ``SwinTransformer`` (``patch_embed``,
``layers.<i>.blocks.<j>``, per-output ``norm1..3``), so the prefix rule covers it.
"""

from __future__ import annotations

import re

from .mapping import KeyMap, drop

__all__ = ["authors_key_map"]

# DyConv[0] runs on the coarser level (high), [1] on the same level (mid), [2] stride 2 (low).
_BRANCHES = {"0": "conv_high", "1": "conv_mid", "2": "conv_low"}
_BLOCK = r"backbone\.dyhead_tower\.(?P<i>\d+)\."
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"backbone\.backbone\.(?P<rest>.+)"), "backbone.fpn.{rest}"),
    (
        re.compile(_BLOCK + r"DyConv\.(?P<j>[012])\.conv\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.{branch}.conv.{p}",
    ),
    (
        re.compile(_BLOCK + r"DyConv\.(?P<j>[012])\.bn\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.{branch}.norm.{p}",
    ),
    (
        re.compile(_BLOCK + r"AttnConv\.1\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.scale_attn.conv.{p}",
    ),
    (
        re.compile(_BLOCK + r"offset\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.offset_conv.{p}",
    ),
    (
        re.compile(_BLOCK + r"relu\.fc\.0\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.task_attn.fc1.{p}",
    ),
    (
        re.compile(_BLOCK + r"relu\.fc\.2\.(?P<p>weight|bias)"),
        "backbone.dyhead.blocks.{i}.task_attn.fc2.{p}",
    ),
    (re.compile(r"(?P<rest>(head|proposal_generator|roi_heads)\..+)"), "{rest}"),
]
_CONFIG_BUFFERS = re.compile(r"(.+\.)?(pixel_mean|pixel_std|anchor_generator\.cell_anchors\..+)")


def authors_key_map(key: str) -> KeyMap | None:
    """The model key for one key of the authors' checkpoints, or None if it is not theirs."""
    if _CONFIG_BUFFERS.fullmatch(key):
        # Older Detectron2 versions saved these; the config defines them.
        return drop("derived from the config")
    for pattern, template in _RULES:
        m = pattern.fullmatch(key)
        if m:
            groups = m.groupdict()
            if "j" in groups:
                groups["branch"] = _BRANCHES[groups["j"]]
            return KeyMap(template.format(**groups))
    return None
