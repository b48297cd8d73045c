"""One entry point: a published checkpoint in, a state dict in this project's names out."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

from torch import Tensor, nn

from .authors import authors_key_map
from .backbones import find_prefix, swin_key_map, torchvision_key_map
from .formats import SOURCES, detect_format, unwrap_state_dict
from .mapping import Conversion, apply_key_map
from .mmdet import check_dcn_bias, mmdet_key_map

__all__ = ["convert_checkpoint"]


def convert_checkpoint(
    checkpoint: Mapping,
    model: nn.Module | Mapping[str, Tensor],
    source: str = "auto",
    *,
    shape_may_differ: Collection[str] = (),
    may_be_absent: Collection[str] = (),
) -> Conversion:
    """Map a published checkpoint onto ``model``'s state dict, strictly.

    Args:
        checkpoint: the object in the file: a state dict, ``{"model": ...}`` or
            ``{"state_dict": ...}``.
        model: the target model, or its ``state_dict()`` (only names and shapes are read, so a
            model on the meta device works).
        source: "authors" (microsoft/DynamicHead detectors), "mmdet" (MMDetection's ATSS +
            DyHead), "torchvision" (ImageNet ResNet), "swin" (official Swin ImageNet weights), or
            "auto" to recognise it from the key names.
        shape_may_differ: model keys whose shape may differ from the checkpoint's (see
            :func:`~dyhead_d2.checkpoint.mapping.apply_key_map`); for fine-tuning to other
            classes, :func:`~dyhead_d2.checkpoint.classes.class_dependent_keys`.
        may_be_absent: prefixes of model keys a detector checkpoint need not fill (they are
            listed in ``Conversion.left_unfilled``): for fine-tuning a box detector into a mask
            model, :func:`~dyhead_d2.checkpoint.classes.absent_branches`.

    A detector checkpoint must fill every entry of the model; an ImageNet backbone checkpoint
    every entry of the model's backbone (Swin's per-output norms and the offset convolutions of
    deformable ResNet blocks excepted, which ImageNet training does not have), the rest being left
    to the model's initialisation. In both cases every
    checkpoint entry must be used or dropped for a stated reason and every shape must match.
    An MMDetection file whose DyHead DCNs have biases needs a model built with ``dcn_bias=True``
    (config override ``model.backbone.dyhead.dcn_bias=True``); the error says so.

    Returns:
        A :class:`~dyhead_d2.checkpoint.mapping.Conversion`; its ``state_dict`` loads with
        ``model.load_state_dict(..., strict=True)`` for a detector source.

    Raises:
        CheckpointConversionError: listing every key that does not map.
        ValueError: for an unknown ``source``, or a checkpoint "auto" does not recognise.
    """
    state_dict = unwrap_state_dict(checkpoint)
    model_state = model.state_dict() if isinstance(model, nn.Module) else model
    if source == "auto":
        detected = detect_format(state_dict)
        if detected is None:
            raise ValueError(
                f"cannot tell the checkpoint's layout from its keys (e.g. "
                f"{list(state_dict)[:3]}); pass source= one of {', '.join(SOURCES)}"
            )
        source = detected
    may_differ = frozenset(shape_may_differ).__contains__
    absent = tuple(may_be_absent)

    def detector_required(key: str) -> bool:
        return not key.startswith(absent)

    if source == "authors":
        return apply_key_map(
            state_dict,
            model_state,
            authors_key_map,
            source=source,
            required=detector_required,
            shape_may_differ=may_differ,
        )
    if source == "mmdet":
        check_dcn_bias(state_dict, model_state)
        return apply_key_map(
            state_dict,
            model_state,
            mmdet_key_map(model_state),
            source=source,
            required=detector_required,
            shape_may_differ=may_differ,
        )
    if source == "torchvision":
        prefix = find_prefix(model_state, "stem.conv1.weight", "ResNet")
        key_map = torchvision_key_map(prefix)
        # A deformable block's offset convolution has no ImageNet counterpart: it keeps its zero
        # initialisation (a plain 3x3 convolution at first), as in Detectron2 and MMDetection.
        offset_conv = re.compile(re.escape(prefix) + r"res\d\.\d+\.conv2_offset\.(weight|bias)")

        def required(key: str) -> bool:
            return key.startswith(prefix) and not offset_conv.fullmatch(key)

    elif source == "swin":
        prefix = find_prefix(model_state, "patch_embed.proj.weight", "Swin")
        key_map = swin_key_map(prefix)
        # Detectron2's per-output norms (norm1..3) have no ImageNet counterpart.
        per_output_norm = re.compile(re.escape(prefix) + r"norm\d+\.(weight|bias)")

        def required(key: str) -> bool:
            return key.startswith(prefix) and not per_output_norm.fullmatch(key)

    else:
        raise ValueError(f"unknown checkpoint source {source!r}; expected one of {SOURCES}")
    return apply_key_map(state_dict, model_state, key_map, source=source, required=required)
