"""Recognising which published layout a checkpoint is in, from its key names alone."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor

__all__ = ["DETECTOR_SOURCES", "BACKBONE_SOURCES", "SOURCES", "detect_format", "unwrap_state_dict"]

DETECTOR_SOURCES = ("authors", "mmdet")
BACKBONE_SOURCES = ("torchvision", "swin")
SOURCES = DETECTOR_SOURCES + BACKBONE_SOURCES


def unwrap_state_dict(checkpoint: Mapping) -> dict[str, Tensor]:
    """The flat ``{name: tensor}`` inside a checkpoint file's object.

    Accepts a bare state dict (torchvision), ``{"model": ...}`` (Detectron2, Swin),
    ``{"state_dict": ...}`` (MMDetection) and those nested once more (Detectron2's loader wraps a
    file without "model" as ``{"model": file}``). Drops a ``module.`` prefix that every key has
    (a model saved inside DistributedDataParallel) and turns numpy arrays into tensors.
    """
    sd = checkpoint
    for _ in range(3):
        if not isinstance(sd, Mapping):
            raise TypeError(f"expected a checkpoint dict, got {type(sd).__name__}")
        inner = next(
            (sd[k] for k in ("state_dict", "model") if isinstance(sd.get(k), Mapping)), None
        )
        if inner is None:
            break
        sd = inner
    out = {}
    for key, value in sd.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor: this is not "
                "a state dict"
            )
        out[key] = value
    if out and all(k.startswith("module.") for k in out):
        out = {k[len("module.") :]: v for k, v in out.items()}
    return out


def detect_format(state_dict: Mapping[str, Tensor]) -> str | None:
    """The source layout of a flat state dict: one of :data:`SOURCES`, or None for anything else
    (e.g. this project's own checkpoints, or Detectron2's).

    Raises:
        ValueError: if the keys carry the marks of more than one layout.
    """
    keys = list(state_dict)
    found = []
    if any(k.startswith(("backbone.dyhead_tower.", "backbone.backbone.")) for k in keys):
        found.append("authors")
    if any(k.startswith(("neck.", "bbox_head.")) for k in keys):
        found.append("mmdet")
    if "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict:
        found.append("torchvision")
    if "patch_embed.proj.weight" in state_dict and any(k.startswith("layers.0.") for k in keys):
        found.append("swin")
    if len(found) > 1:
        raise ValueError(
            f"the checkpoint's keys look like several layouts ({', '.join(found)}); "
            "choose one explicitly"
        )
    return found[0] if found else None
