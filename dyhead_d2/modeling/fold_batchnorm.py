"""Folding Detectron2's frozen BatchNorm into the convolutions before it, for inference."""

from __future__ import annotations

import copy

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn

__all__ = ["fold_frozen_batchnorm", "folded_for_inference", "has_foldable_batchnorm"]


def fold_frozen_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with every ``FrozenBatchNorm2d`` that is the ``norm`` of a Detectron2
    ``Conv2d`` folded into that convolution's weight and bias; for inference.

    ``FrozenBatchNorm2d`` is a fixed per-channel affine map, ``y = x * s + t`` with
    ``s = weight / sqrt(running_var + eps)`` and ``t = bias - running_mean * s``, so
    ``norm(conv(x))`` equals one convolution with weight ``W * s`` (per output channel) and bias
    ``b * s + t``: one pass over each activation less (R-50's 53 frozen norms). The folded values
    are computed in float64 and rounded once, so outputs equal the unfolded model's within
    float32 rounding. Nothing else changes: BatchNorm that trains (``nn.BatchNorm2d``,
    ``SyncBatchNorm``, :class:`~dyhead_d2.layers.FrozenStatsBatchNorm2d`), GroupNorm and every
    other module are left as they are, and so are the state-dict keys of everything but the
    folded norms (a folded convolution gains a ``bias``, its ``norm`` entries go).

    Checkpoints must hold the unfolded model (fine-tuning needs the norms): fold a copy for
    inference (the default) and keep training, saving and loading on the original.

    Args:
        model: in eval mode (a ValueError otherwise: a training model must keep its norms).
        inplace: fold ``model`` itself instead of a deep copy.
    Returns:
        The folded model (``model`` itself when ``inplace``), in eval mode.
    """
    if model.training:
        raise ValueError(
            "fold_frozen_batchnorm is for inference: call model.eval() first (a model in "
            "training mode keeps its norms; fold a copy for evaluation instead)"
        )
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        if _is_foldable(module):
            _fold_into(module)
    return model


def has_foldable_batchnorm(model: nn.Module) -> bool:
    """Whether :func:`fold_frozen_batchnorm` would fold anything in ``model``."""
    return any(_is_foldable(m) for m in model.modules())


def folded_for_inference(model: nn.Module) -> nn.Module:
    """What to run inference on: a folded copy of ``model`` in eval mode
    (:func:`fold_frozen_batchnorm`), or ``model`` itself when it has nothing to fold. Either way
    ``model`` keeps its mode and its norms, e.g. to go on training after an evaluation."""
    if not has_foldable_batchnorm(model):
        return model
    folded = copy.deepcopy(model).eval()
    return fold_frozen_batchnorm(folded, inplace=True)


def _is_foldable(module: nn.Module) -> bool:
    return isinstance(module, Conv2d) and isinstance(module.norm, FrozenBatchNorm2d)


@torch.no_grad()
def _fold_into(conv: Conv2d) -> None:
    norm = conv.norm
    scale = norm.weight.double() * (norm.running_var.double() + norm.eps).rsqrt()
    shift = norm.bias.double() - norm.running_mean.double() * scale
    weight = conv.weight.double() * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter(weight.to(dtype), requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(bias.to(dtype), requires_grad=conv.weight.requires_grad)
    conv.norm = None
