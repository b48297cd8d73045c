"""Parameter and FLOP counts of DyHead models with fvcore, deformable convolutions included.

fvcore counts FLOPs by tracing a model and adding up a handle per operator. It has handles for
convolutions, matrix products, normalisation and upsampling, but none for torchvision's
deformable convolution, which it would skip with a warning. :func:`deform_conv2d_flop_jit` is
that handle. Trace DyHead with ``deform_impl="torchvision"`` (the per-level path, one
``torchvision::deform_conv2d`` per branch and level) for it to apply: the ``"sampled"`` path
computes the same function from gathers and matrix products, which fvcore counts only in part.

**How a deformable convolution is counted.** For ``torchvision::deform_conv2d`` with input
``(N, C_in, H, W)``, weight ``(C_out, C_in / g, k_h, k_w)`` and output ``(N, C_out, H_o, W_o)``,
with ``S = N * H_o * W_o * k_h * k_w`` sampling locations::

    FLOPs = S * C_out * C_in / g          # the plain convolution of the same shapes
          + S * C_in * 4                  # bilinear sampling: 4 neighbours per sampled value
          + S * C_in                      # modulation (DCNv2's mask), when there is a mask

in fvcore's unit, where one multiply-add is one FLOP (as for its plain convolutions, whose count
is the first term). Not counted: the bilinear weights, computed once per sampling location for
all channels (1/C_in of the sampling term), and the bias (fvcore does not count a plain
convolution's bias either).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from detectron2.utils.analysis import FlopCountAnalysis as DetectronFlopCountAnalysis
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape
from torch import nn

from ..atss import ATSSHead

__all__ = [
    "FLOP_HANDLES",
    "atss_original_head",
    "deform_conv2d_flop_jit",
    "deform_conv2d_flops",
    "detector_flops",
    "module_flops",
]


def deform_conv2d_flops(
    input_shape: Sequence[int],
    weight_shape: Sequence[int],
    output_shape: Sequence[int],
    use_mask: bool = True,
) -> int:
    """FLOPs (multiply-adds) of one deformable convolution; see the module docstring."""
    n, c_in = input_shape[:2]
    c_out, c_in_per_group, kh, kw = weight_shape
    ho, wo = output_shape[2:]
    locations = n * ho * wo * kh * kw
    conv = locations * c_out * c_in_per_group
    sampling = locations * c_in * (4 + (1 if use_mask else 0))
    return int(conv + sampling)


def deform_conv2d_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle of ``torchvision::deform_conv2d(input, weight, offset, mask, bias,
    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, offset_groups,
    use_mask)``."""
    use_mask = bool(inputs[13].toIValue())
    return deform_conv2d_flops(
        get_shape(inputs[0]), get_shape(inputs[1]), get_shape(outputs[0]), use_mask
    )


# Handles to add to an fvcore FlopCountAnalysis: ``analysis.set_op_handle(**FLOP_HANDLES)``.
FLOP_HANDLES = {"torchvision::deform_conv2d": deform_conv2d_flop_jit}


def _quiet(analysis: FlopCountAnalysis) -> FlopCountAnalysis:
    analysis.set_op_handle(**FLOP_HANDLES)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def module_flops(module: nn.Module, inputs: tuple) -> FlopCountAnalysis:
    """fvcore's analysis of ``module(*inputs)``, deformable convolutions counted; warnings
    about operators it cannot count are off (see ``unsupported_ops()``)."""
    return _quiet(FlopCountAnalysis(module, inputs))


def detector_flops(model: nn.Module, image: torch.Tensor) -> FlopCountAnalysis:
    """Detectron2's analysis of a detector on one (3, H, W) image (its list-of-dicts input),
    deformable convolutions counted. Module names are the model's, under ``model.``."""
    h, w = image.shape[-2:]
    return _quiet(DetectronFlopCountAnalysis(model, [{"image": image, "height": h, "width": w}]))


def atss_original_head(
    in_channels: int, num_classes: int, num_levels: int = 5, channels: int | None = None
) -> ATSSHead:
    """The head DyHead replaces: ATSS's own, two towers (classification, box) of four 3x3
    convolutions with GroupNorm and ReLU, ``channels`` wide (default ``in_channels``, 256 on
    COCO), and 3x3 predictors for class logits, box deltas and centerness."""
    return ATSSHead(
        in_channels=in_channels,
        num_classes=num_classes,
        num_levels=num_levels,
        num_convs=4,
        conv_channels=channels or in_channels,
        pred_kernel_size=3,
        norm="GN",
    )
