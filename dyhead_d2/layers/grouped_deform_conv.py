"""Deformable convolution with groups, offset groups and dilation, from gathers and one batched
matrix product, in plain PyTorch: the ``"sampled"`` implementation of the cases
:func:`~dyhead_d2.layers.sampled_deform_conv.sampled_deform_conv` does not cover.

Deformable backbones need them: ResNeXt's 3x3 convolution is grouped (64 groups in
ResNeXt-101 64x4d), Detectron2's ``deform_num_groups`` gives every group of input channels its own
offsets and mask, and ``res5_dilation=2`` dilates the kernel. The computation is the columns-first
one of the sampled convolution, with the same sampling
(:func:`~dyhead_d2.layers.sampled_deform_conv.bilinear_corners`: torchvision's rounding, corners
and zeros outside the image) and the same gather-sum
(:func:`~dyhead_d2.layers.sampled_deform_conv.gather_sum`):

1. every sampled value: for each offset group, image, output pixel and kernel tap, the four
   bilinear corners of the input's channels of that offset group, weighted and summed (one
   ``gather_sum`` over the (offset group, image, pixel) rows of the input);
2. the columns (N*Ho*Wo, k*k, C) multiplied with the weight group by group (one batched matrix
   product, (groups, N*Ho*Wo, k*k*C/groups) x (groups, k*k*C/groups, C_out/groups)).

For training, the columns (k*k times the input) are recomputed in the backward rather than kept
(:func:`torch.utils.checkpoint.checkpoint`), as the sampled convolution does.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .sampled_deform_conv import FULL_PRECISION, bilinear_corners, gather_sum

__all__ = ["sampled_grouped_deform_conv"]


def _sample_positions(
    offset: Tensor,
    kernel_size: tuple[int, int],
    stride: int,
    padding: int,
    dilation: int,
    offset_groups: int,
) -> Tensor:
    """Sample positions (offset groups, N, Ho, Wo, kh*kw, 2) as (y, x): ``out * stride -
    padding + tap * dilation + offset``, one rounding, as torchvision's kernel computes them."""
    n, _, ho, wo = offset.shape
    kh, kw = kernel_size
    kk = kh * kw
    dev = offset.device
    taps = torch.arange(kk, device=dev)
    ys = (torch.arange(ho, device=dev) * stride - padding).view(ho, 1, 1)
    xs = (torch.arange(wo, device=dev) * stride - padding).view(1, wo, 1)
    ys = ys + (taps // kw) * dilation
    xs = xs + (taps % kw) * dilation
    base = torch.stack(torch.broadcast_tensors(ys, xs), dim=-1).to(offset.dtype)
    # (N, G*kk*2, Ho, Wo): per offset group, per tap, (dy, dx): torchvision's layout.
    off = offset.view(n, offset_groups, kk, 2, ho, wo).permute(1, 0, 4, 5, 2, 3)
    return base + off


def _grouped_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    stride: int,
    padding: int,
    dilation: int,
) -> Tensor:
    n, c, h, w = x.shape
    c_out, c_per_group, kh, kw = weight.shape
    groups = c // c_per_group
    kk = kh * kw
    offset_groups = offset.shape[1] // (2 * kk)
    ho, wo = offset.shape[-2:]
    in_dtype = x.dtype
    dtype = in_dtype if in_dtype in FULL_PRECISION else torch.float32
    c_off = c // offset_groups
    # Rows of the table: (offset group, image, pixel), each the group's C / G input channels.
    rows = x.to(dtype).reshape(n, offset_groups, c_off, h * w).permute(1, 0, 3, 2)
    rows = rows.reshape(-1, c_off)
    pos = _sample_positions(offset.to(dtype), (kh, kw), stride, padding, dilation, offset_groups)
    mod = mask.to(dtype).view(n, offset_groups, kk, ho, wo).permute(1, 0, 3, 4, 2)
    index, wts = bilinear_corners(pos[..., 0], pos[..., 1], mod, h, w)
    # Each (offset group, image) block of rows starts at (g * N + b) * H * W.
    start = torch.arange(offset_groups * n, device=x.device) * (h * w)
    index = index + start.view(offset_groups, n, 1, 1, 1, 1)
    # (G, N, Ho, Wo, kk, C/G) samples -> columns (N*Ho*Wo, kk, C), channels in input order.
    samples = gather_sum(rows, index.reshape(-1, 4), wts.reshape(-1, 4))
    cols = samples.view(offset_groups, n, ho, wo, kk, c_off).permute(1, 2, 3, 4, 0, 5)
    cols = cols.reshape(n * ho * wo, kk, groups, c_per_group)
    # Group by group: (groups, P, kk * C/groups) @ (groups, kk * C/groups, C_out/groups).
    cols = cols.permute(2, 0, 1, 3).reshape(groups, n * ho * wo, kk * c_per_group)
    w_cols = weight.to(dtype).view(groups, c_out // groups, c_per_group, kk)
    w_cols = w_cols.permute(0, 3, 2, 1).reshape(groups, kk * c_per_group, c_out // groups)
    out = torch.bmm(cols, w_cols)  # (groups, P, C_out/groups)
    out = out.permute(1, 0, 2).reshape(n, ho, wo, c_out)
    if bias is not None:
        out = out + bias.to(dtype)
    return out.permute(0, 3, 1, 2).to(in_dtype)


def sampled_grouped_deform_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
) -> Tensor:
    """Modulated deformable convolution, any groups, offset groups and dilation.

    Same arguments and result as :func:`torchvision.ops.deform_conv2d` with ``mask`` (square
    stride, padding and dilation): groups are ``C / weight.shape[1]``, offset groups
    ``offset.shape[1] / (2 * kh * kw)``.

    Args:
        x: (N, C, H, W).
        offset: (N, 2 * G * kh * kw, Ho, Wo), per offset group and tap the pair (dy, dx).
        mask: (N, G * kh * kw, Ho, Wo); all ones for an unmodulated (DCNv1) convolution.
        weight: (C_out, C / groups, kh, kw); bias: (C_out,) or None.
    Returns:
        (N, C_out, Ho, Wo) in ``x``'s dtype; computed in float32 (float64 for float64 inputs).
    """
    args = (x, offset, mask, weight, bias, stride, padding, dilation)
    tensors = (x, offset, mask, weight, bias)
    training = torch.is_grad_enabled() and not torch.jit.is_tracing()
    if training and any(t is not None and t.requires_grad for t in tensors):
        return checkpoint(_grouped_conv, *args, use_reentrant=False, preserve_rng_state=False)
    return _grouped_conv(*args)
