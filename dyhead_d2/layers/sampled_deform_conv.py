"""Modulated deformable convolution (DCNv2) from gathers and matrix multiplies, in plain PyTorch.

``torchvision.ops.deform_conv2d`` on CPU builds its columns with a scalar loop and spends most of
its backward in serial scatter loops. This module computes the same function from a few large,
well-parallelised ATen ops:

* :func:`bilinear_taps` turns offsets and masks into, for every output pixel and kernel tap, the
  four bilinear corners (flat pixel indices) and their weights (bilinear weight x mask, zero for a
  corner outside the image). It reproduces DCNv2's sampling exactly: the position is
  ``(i * stride - padding + ki) + dy`` rounded once, as torchvision computes it, the corners are
  ``floor`` and ``floor + 1``, and corners outside the image read zero. Because corners and
  fractions come from the same float as in torchvision's kernel, the result and the gradient with
  respect to the offset agree with it even at integer positions and on the border (e.g. exactly
  -1 or H), where the bilinear weights are not differentiable.
* :func:`gather_sum` is ``out[b] = sum_j weight[b, j] * table[index[b, j]]`` (one
  ``embedding_bag`` call) with a hand-written backward (a sorted ``embedding_bag`` for the table
  gradient, a sampled dense-dense product for the weight gradient). Gradients reach offsets and
  masks through the bilinear weights with ordinary autograd.

Two ways of combining them, chosen by :func:`sampled_deform_conv`:

* **taps first** (output as large as the input, e.g. stride 1): multiply the input by the k*k
  weight slices first, ``Y = x @ W_k`` for every tap (one GEMM, a 1x1 convolution to k*k*C_out
  channels), then each output pixel is a gather-sum of 4*k*k rows of ``Y``. The gathered tensor
  is the output itself, k*k times smaller than im2col columns.
* **columns first**: gather the (N*Ho*Wo, k*k*C) columns of the input, then one GEMM with the
  weight. Used when the output has fewer pixels than the input (stride 2), where taps first
  would multiply every input pixel instead of every output pixel.

Results equal torchvision's up to float rounding (different summation order), outputs and all
gradients, for float32 and float64.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bilinear_corners",
    "bilinear_taps",
    "column_weight",
    "gather_sum",
    "sampled_deform_conv",
    "tap_positions",
    "tap_weight",
]


# ONNX's TensorProto.FLOAT: the exported gather-sum is float32, like the model's inference.
_ONNX_FLOAT = 1


class _GatherSum(torch.autograd.Function):
    """``out[b] = sum_j weight[b, j] * table[index[b, j]]``; see :func:`gather_sum`."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(table, index, weight)
        w = weight.to(table.dtype)
        return F.embedding_bag(index, table, mode="sum", per_sample_weights=w)

    @staticmethod
    def symbolic(g, table, index, weight):
        # ONNX export (TorchScript exporter): ONNX has no embedding_bag, and the exporter would
        # turn it into a Loop over the bags. The same sum from standard ops: gather the
        # (B, K, D) rows, then a batched (B, 1, K) x (B, K, D) product.
        rows = g.op("Gather", table, index, axis_i=0)
        one = g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64))
        weight = g.op("Cast", g.op("Unsqueeze", weight, one), to_i=_ONNX_FLOAT)
        return g.op("Squeeze", g.op("MatMul", weight, rows), one)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        table, index, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_table = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_table = _scatter_rows(grad_out, index, weight, table.shape[0])
        if ctx.needs_input_grad[2]:
            if table.dtype != weight.dtype:  # reduced-precision table: dot products in weight's
                grad_out, table = grad_out.to(weight.dtype), table.to(weight.dtype)
            grad_weight = _rowwise_dots(grad_out, table, index)
        return grad_table, None, grad_weight


def gather_sum(table: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """Weighted sums of gathered rows: ``out[b] = sum_j weight[b, j] * table[index[b, j]]``.

    Args:
        table: (T, D).
        index: (B, K) int64 row indices into ``table``.
        weight: (B, K); rounded to ``table``'s dtype for the sums (e.g. bfloat16 under
            autocast), while its gradient is computed in float32 or float64.
    Returns:
        (B, D) in ``table``'s dtype. Differentiable with respect to ``table`` and ``weight``.
    """
    return _GatherSum.apply(table, index, weight)


def _scatter_rows(grad_out: Tensor, index: Tensor, weight: Tensor, num_rows: int) -> Tensor:
    """``grad[t] = sum over (b, j) with index[b, j] == t of weight[b, j] * grad_out[b]``.

    The transposed gather: sort the (b, j) pairs by row, then one ``embedding_bag`` with one bag
    per table row (empty bags give zero rows).
    """
    k = index.shape[1]
    flat = index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=num_rows)
    starts = torch.zeros_like(counts)
    torch.cumsum(counts[:-1], 0, out=starts[1:])
    w = weight.reshape(-1)[order].to(grad_out.dtype)
    return F.embedding_bag(order // k, grad_out, starts, mode="sum", per_sample_weights=w)


# Elements of the gathered (rows, K, D) blocks that the fallback dot products materialise at once.
_DOT_CHUNK_ELEMENTS = 1 << 26


def _rowwise_dots(grad_out: Tensor, table: Tensor, index: Tensor) -> Tensor:
    """``dots[b, j] = <grad_out[b], table[index[b, j]]>``, shape (B, K)."""
    b, k = index.shape
    if grad_out.device.type == "cpu" and k <= table.shape[0]:
        # A sampled dense-dense product on the (B, T) pattern given by ``index``: one parallel
        # dot product per (b, j), nothing materialised. Repeated indices in a row are fine (each
        # entry gets its own dot product, in order), but the op rejects patterns with more
        # entries than the dense (B, T) matrix, which only tiny images reach.
        crow = torch.arange(0, b * k + 1, k, device=index.device)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta state")
            pattern = torch.sparse_csr_tensor(
                crow,
                index.reshape(-1),
                grad_out.new_zeros(b * k),
                size=(b, table.shape[0]),
                check_invariants=False,
            )
            dots = torch.sparse.sampled_addmm(pattern, grad_out, table.t(), beta=0.0)
        return dots.values().view(b, k)
    rows = max(1, _DOT_CHUNK_ELEMENTS // max(1, k * table.shape[1]))
    return torch.cat(
        [
            torch.einsum("bkd,bd->bk", table[index[s : s + rows]], grad_out[s : s + rows])
            for s in range(0, b, rows)
        ]
    )


def tap_positions(
    n: int, out_size: tuple[int, int], kernel_size: int, stride: int, padding: int, like: Tensor
) -> Tensor:
    """The integer part of every sample position, (N, Ho, Wo, k*k, 2) as (y, x), in ``like``'s
    dtype and device: ``out * stride - padding + tap``, what torchvision's kernel adds the offset
    to. Exact in floating point."""
    ho, wo = out_size
    kk = kernel_size * kernel_size
    dev = like.device
    taps = torch.arange(kk, device=dev)
    ys = (torch.arange(ho, device=dev) * stride - padding).view(ho, 1, 1) + taps // kernel_size
    xs = (torch.arange(wo, device=dev) * stride - padding).view(1, wo, 1) + taps % kernel_size
    base = torch.stack(torch.broadcast_tensors(ys, xs), dim=-1).to(like.dtype)
    return base.expand(n, ho, wo, kk, 2)


def _upper_bound(size: int | Tensor, like: Tensor) -> float | Tensor:
    """``size + 1`` as a clamp bound for ``like``: a number, or a tensor of ``like``'s dtype."""
    if isinstance(size, Tensor):
        return (size.max() + 1).to(like.dtype)
    return float(size + 1)


def bilinear_corners(
    y: Tensor, x: Tensor, mask: Tensor, height: int | Tensor, width: int | Tensor
) -> tuple[Tensor, Tensor]:
    """DCNv2's bilinear sampling of positions (y, x) of an ``height`` x ``width`` image.

    Args:
        y, x: sample positions, any shape S, already rounded as the kernel rounds them.
        mask: modulation, shape S.
        height, width: the image size; ints, or int64 tensors broadcastable to S when the samples
            come from images of different sizes.
    Returns:
        ``index`` (S..., 4), int64 flat pixel indices ``y * width + x`` (0 for a corner outside
        the image), and ``weight`` (S..., 4): bilinear weight x mask, exactly zero for a corner
        outside the image. Corners are ordered (y0, x0), (y0, x1), (y1, x0), (y1, x1) with
        ``y0 = floor(y)`` and ``y1 = y0 + 1``. ``weight`` is differentiable with respect to y, x
        and mask.
    """
    # Positions far outside are clamped (every corner stays outside, so value and gradient stay
    # zero); this only keeps the integer arithmetic below in range.
    # (Bounds from the sizes without a Python float, so that tracing keeps them symbolic.)
    y = y.clamp(min=-2.0).clamp(max=_upper_bound(height, y))
    x = x.clamp(min=-2.0).clamp(max=_upper_bound(width, x))
    y0 = y.floor()
    x0 = x.floor()
    ly = y - y0
    lx = x - x0
    hy = 1.0 - ly
    hx = 1.0 - lx
    y0 = y0.long()
    x0 = x0.long()
    in_y0 = (y0 >= 0) & (y0 < height)
    in_y1 = (y0 >= -1) & (y0 < height - 1)
    in_x0 = (x0 >= 0) & (x0 < width)
    in_x1 = (x0 >= -1) & (x0 < width - 1)
    inside = torch.stack((in_y0 & in_x0, in_y0 & in_x1, in_y1 & in_x0, in_y1 & in_x1), dim=-1)
    weight = torch.stack((hy * hx, hy * lx, ly * hx, ly * lx), dim=-1)
    weight = weight * (mask.unsqueeze(-1) * inside)
    corner = y0 * width + x0
    index = torch.stack((corner, corner + 1, corner + width, corner + (width + 1)), dim=-1)
    index = torch.where(inside, index, 0)
    return index, weight


def bilinear_taps(
    offset: Tensor,
    mask: Tensor,
    in_size: tuple[int, int],
    kernel_size: int,
    stride: int,
    padding: int,
) -> tuple[Tensor, Tensor]:
    """Bilinear corners and weights of every sample of a modulated deformable convolution.

    Args:
        offset: (N, 2*k*k, Ho, Wo), pairs (dy, dx) per tap (torchvision's layout).
        mask: (N, k*k, Ho, Wo).
        in_size: (H, W) of the sampled input.
    Returns:
        ``index`` and ``weight`` of :func:`bilinear_corners`, each (N, Ho, Wo, k*k, 4): flat
        pixel indices within one image and bilinear weight x mask.
    """
    n, _, ho, wo = offset.shape
    kk = kernel_size * kernel_size
    off = offset.view(n, kk, 2, ho, wo).permute(0, 3, 4, 1, 2)  # (N, Ho, Wo, kk, 2)
    # One rounding, (float) integer + offset, exactly like the kernel.
    pos = tap_positions(n, (ho, wo), kernel_size, stride, padding, offset) + off
    return bilinear_corners(pos[..., 0], pos[..., 1], mask.permute(0, 2, 3, 1), *in_size)


def tap_weight(weight: Tensor) -> Tensor:
    """(C_out, C, k, k) -> (k*k*C_out, C): row ``tap * C_out + o`` is ``weight[o, :, ki, kj]``."""
    return weight.permute(2, 3, 0, 1).reshape(-1, weight.shape[1])


def column_weight(weight: Tensor) -> Tensor:
    """(C_out, C, k, k) -> (C_out, k*k*C), matching columns laid out (tap, channel)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _image_offsets(n: int, pixels: int, device: torch.device) -> Tensor:
    return (torch.arange(n, device=device) * pixels).view(n, 1, 1, 1, 1)


def sampled_deform_conv(
    x: Tensor,
    offset: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
) -> Tensor:
    """Modulated deformable convolution (square kernel, one deformable group, dilation 1).

    Same arguments and result as :func:`torchvision.ops.deform_conv2d` with ``mask``. The result
    is laid out channels-last (its values are what torchvision returns).
    """
    n, c, h, w = x.shape
    c_out, _, k, _ = weight.shape
    ho, wo = offset.shape[-2:]
    kk = k * k
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    index, wts = bilinear_taps(offset, mask, (h, w), k, stride, padding)
    index = index + _image_offsets(n, h * w, x.device)
    if h * w <= ho * wo:
        # Taps first: Y[pixel, tap] = W_tap @ x[pixel], then 4*k*k rows of Y per output pixel.
        table = (rows @ tap_weight(weight).t()).view(-1, c_out)
        index = index * kk + torch.arange(kk, device=x.device).view(kk, 1)
        out = gather_sum(table, index.view(-1, 4 * kk), wts.reshape(-1, 4 * kk))
        if bias is not None:
            out = out + bias
    else:
        cols = gather_sum(rows, index.view(-1, 4), wts.reshape(-1, 4)).view(-1, kk * c)
        w_cols = column_weight(weight).t()
        out = cols @ w_cols if bias is None else torch.addmm(bias, cols, w_cols)
    return out.view(n, ho, wo, c_out).permute(0, 3, 1, 2)
