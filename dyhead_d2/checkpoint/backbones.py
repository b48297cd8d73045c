"""ImageNet backbone names -> Detectron2's ResNet and SwinTransformer names.

torchvision (and MMDetection) ResNet -> Detectron2 ``ResNet``::

    conv1.weight, bn1.*                  -> stem.conv1.weight, stem.conv1.norm.*
    layer<s>.<b>.conv<k>.weight          -> res<s+1>.<b>.conv<k>.weight
    layer<s>.<b>.bn<k>.*                 -> res<s+1>.<b>.conv<k>.norm.*
    layer<s>.<b>.downsample.0.weight     -> res<s+1>.<b>.shortcut.weight
    layer<s>.<b>.downsample.1.*          -> res<s+1>.<b>.shortcut.norm.*
    fc.*                                 -> dropped (ImageNet classifier)

The official Swin repository's names are Detectron2's (``patch_embed.*``, ``layers.<i>.*``,
including the same PatchMerging channel order), so those map unchanged. Dropped: the classifier
``head``, the final ``norm`` (Detectron2 has one norm per output, ``norm<i>``, which keep their
initialisation, as in the authors' and MMDetection's detectors) and the ``attn_mask`` buffers,
which Detectron2 recomputes for each input size.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .mapping import KeyMap, drop

__all__ = ["find_prefix", "resnet_key", "swin_key_map", "torchvision_key_map"]

_UNIT = r"layer(?P<s>\d)\.(?P<b>\d+)\."  # torchvision: stage s (1-4), block b
_RESNET_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"conv1\.weight"), "stem.conv1.weight"),
    (re.compile(r"bn1\.(?P<p>\w+)"), "stem.conv1.norm.{p}"),
    (re.compile(_UNIT + r"conv(?P<k>\d)\.weight"), "res{S}.{b}.conv{k}.weight"),
    (
        re.compile(_UNIT + r"bn(?P<k>\d)\.(?P<p>\w+)"),
        "res{S}.{b}.conv{k}.norm.{p}",
    ),
    (
        re.compile(_UNIT + r"downsample\.0\.weight"),
        "res{S}.{b}.shortcut.weight",
    ),
    (
        re.compile(_UNIT + r"downsample\.1\.(?P<p>\w+)"),
        "res{S}.{b}.shortcut.norm.{p}",
    ),
]

_SWIN_KEEP = re.compile(r"(patch_embed|layers|absolute_pos_embed)(\..+)?")
_SWIN_ATTN_MASK = re.compile(r"layers\.\d+\.blocks\.\d+\.attn_mask")
_SWIN_CLASSIFIER = re.compile(r"(head|norm)\.(weight|bias)")


def resnet_key(key: str) -> str | None:
    """Detectron2 ResNet name of a torchvision-style ResNet key (``layer1.0.bn2.weight`` ->
    ``res2.0.conv2.norm.weight``), or None for a key that is not part of the ResNet body."""
    for pattern, template in _RESNET_RULES:
        m = pattern.fullmatch(key)
        if m:
            groups = m.groupdict()
            if "s" in groups:
                groups["S"] = int(groups["s"]) + 1
            return template.format(**groups)
    return None


def torchvision_key_map(prefix: str):
    """Key map of a torchvision ResNet state dict onto a Detectron2 ResNet at ``prefix``."""

    def key_map(key: str) -> KeyMap | None:
        if re.fullmatch(r"fc\.(weight|bias)", key):
            return drop("ImageNet classifier")
        name = resnet_key(key)
        return None if name is None else KeyMap(prefix + name)

    return key_map


def swin_key_map(prefix: str):
    """Key map of an official Swin ImageNet state dict onto Detectron2's SwinTransformer at
    ``prefix``."""

    def key_map(key: str) -> KeyMap | None:
        if _SWIN_ATTN_MASK.fullmatch(key):
            return drop("shifted-window mask, recomputed for each input size")
        if _SWIN_CLASSIFIER.fullmatch(key):
            return drop("ImageNet classifier and its norm")
        if _SWIN_KEEP.fullmatch(key):
            return KeyMap(prefix + key)
        return None

    return key_map


def find_prefix(model_keys: Iterable[str], suffix: str, what: str) -> str:
    """The one prefix under which ``suffix`` occurs among ``model_keys`` (e.g. where a model
    keeps its ResNet: ``backbone.fpn.bottom_up.`` for ``stem.conv1.weight``)."""
    found = sorted({k[: -len(suffix)] for k in model_keys if k.endswith(suffix)})
    found = [p for p in found if p == "" or p.endswith(".")]
    if len(found) != 1:
        where = f"several places: {found}" if found else "none"
        raise ValueError(
            f"cannot load {what} weights: the model must have exactly one {what} "
            f"(a key ending in {suffix!r}); found {where}"
        )
    return found[0]
