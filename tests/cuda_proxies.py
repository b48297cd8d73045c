"""CPU stand-ins for what a CUDA device does differently, for tests on machines without one.

* :func:`emulate_tf32_convolutions`: convolutions as cuDNN computes them in TF32 (PyTorch's
  default on Ampere and later GPUs): every operand rounded to TF32, float32 accumulation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor


def round_to_tf32(t: Tensor) -> Tensor:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties away from zero, as
    CUDA's ``cvt.rna.tf32.f32``); still stored as float32."""
    bits = t.float().contiguous().view(torch.int32)
    # The low 13 of float32's 23 mantissa bits go: add half of their range to the magnitude
    # (sign-magnitude, so this rounds away from zero), then clear them.
    return ((bits + 0x1000) & -0x2000).view(torch.float32).view(t.shape)


class _Tf32Conv2d(torch.autograd.Function):
    """conv2d whose forward and both backward convolutions see TF32-rounded operands."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        x, weight = round_to_tf32(x), round_to_tf32(weight)
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.has_bias = bias is not None
        return torch.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        grad_r = round_to_tf32(grad)
        gx = torch.nn.grad.conv2d_input(x.shape, weight, grad_r, stride, padding, dilation, groups)
        gw = torch.nn.grad.conv2d_weight(x, weight.shape, grad_r, stride, padding, dilation, groups)
        gb = grad.sum(dim=(0, 2, 3)) if ctx.has_bias else None
        return gx, gw, gb, None, None, None, None


def _tf32_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _Tf32Conv2d.apply(input, weight, bias, stride, padding, dilation, groups)


@contextmanager
def emulate_tf32_convolutions() -> Iterator[None]:
    """Within the block, every ``F.conv2d`` (so every ``nn.Conv2d``) runs as cuDNN's TF32 mode
    does: inputs, weights and, in the backward, output gradients rounded to TF32; float32
    accumulation. Matrix products stay float32, as PyTorch's default keeps them on CUDA."""
    real = F.conv2d
    F.conv2d = _tf32_conv2d
    try:
        yield
    finally:
        F.conv2d = real
