"""Modulated deformable convolution (DCNv2) used by DyHead's spatial-aware attention.

Every DyHead block calls :func:`modulated_deform_conv`; it is the one place where the deformable
convolution implementation is chosen, so a faster kernel can be swapped in without touching the
model code.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

__all__ = ["modulated_deform_conv", "ModulatedDeformConv"]


def modulated_deform_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
) -> Tensor:
    """Modulated deformable convolution with one deformable group.

    Args:
        x: input features, (N, C, H, W).
        offset: sampling offsets, (N, 2 * kh * kw, Ho, Wo), pairs (dy, dx) per kernel tap.
        mask: modulation scalars, already passed through a sigmoid, (N, kh * kw, Ho, Wo).
        weight: (C_out, C, kh, kw).
        bias: (C_out,) or None.
    Returns:
        (N, C_out, Ho, Wo), in ``x``'s dtype.

    Under autocast the op runs in float32 (torchvision's CPU kernel has no reduced-precision path
    and sampling offsets need the precision) and the result is cast back to ``x``'s dtype.
    """
    device_type = x.device.type
    if (
        torch.is_autocast_enabled(device_type)
        or len({x.dtype, offset.dtype, mask.dtype, weight.dtype}) > 1
    ):
        with torch.autocast(device_type, enabled=False):
            out = deform_conv2d(
                x.float(),
                offset.float(),
                weight.float(),
                None if bias is None else bias.float(),
                stride=stride,
                padding=padding,
                mask=mask.float(),
            )
        return out.to(x.dtype)
    return deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, mask=mask)


class ModulatedDeformConv(nn.Module):
    """A 3x3 (by default) DCNv2 layer whose offset and mask are supplied by the caller.

    DyHead predicts one offset/mask per level and shares it between three convolutions, so this
    module holds only the weight and the optional bias.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Both ports: weights ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C * k * k, bias 0.
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size**2)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return modulated_deform_conv(
            x, offset, mask, self.weight, self.bias, stride=self.stride, padding=self.padding
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"
        )
