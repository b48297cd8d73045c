"""Modulated deformable convolution (DCNv2) from gathers and matrix multiplies, in plain PyTorch.

``torchvision.ops.deform_conv2d`` on CPU builds its columns with a scalar loop and spends most of
its backward in serial scatter loops. This module computes the same function from a few large,
well-parallelised ATen ops, for one input (:func:`sampled_deform_conv`) or for several inputs
that share the weight, e.g. the levels of a feature pyramid (:func:`sampled_deform_conv_levels`,
the one implementation; a single input is the case N = 1):

* :func:`bilinear_corners` turns sample positions and masks into, for every output pixel and
  kernel tap, the four bilinear corners (flat pixel indices) and their weights (bilinear weight x
  mask, zero for a corner outside the image). It reproduces DCNv2's sampling exactly: the position
  is ``(i * stride - padding + ki) + dy`` rounded once, as torchvision computes it, the corners
  are ``floor`` and ``floor + 1``, and corners outside the image read zero. Because corners and
  fractions come from the same float as in torchvision's kernel, the result and the gradient with
  respect to the offset agree with it even at integer positions and on the border (e.g. exactly
  -1 or H), where the bilinear weights are not differentiable.
* :func:`gather_sum` is ``out[b] = sum_j weight[b, j] * table[index[b, j]]`` (one
  ``embedding_bag`` call) with a hand-written backward (a sorted ``embedding_bag`` for the table
  gradient, a sampled dense-dense product for the weight gradient). Gradients reach offsets and
  masks through the bilinear weights with ordinary autograd.

All inputs' pixels are stacked as the rows of one (sum_j N*H_j*W_j, C) matrix; the columns of
the output pixels (sum_j N*Ho_j*Wo_j, k*k*C), each the bilinear samples of the k*k taps, are
gathered from them (:func:`gather_sum`) and multiplied by the weight (one GEMM). On the CPU this
runs in blocks of output pixels whose columns take about :data:`COLUMN_BLOCK_BYTES`, so that each
block is still in the cache when its GEMM reads it instead of a round trip through memory
(measured 1.27x faster than unblocked for a 256-channel convolution at 800x1216). (Multiplying
the input pixels by the k*k weight slices first and gathering the products, "taps first", costs
the same FLOPs for stride 1 but cannot be blocked: every output pixel may read any product.)

For training, what the backward gets depends on the size of the columns (output pixels x
k*k*C values) against ``keep_columns_bytes`` (default :data:`KEEP_COLUMNS_BYTES`):

* **small**: the forward gathers all columns at once and ordinary autograd keeps them, the rows
  and the bilinear weights (with their graph back to the offsets and masks). The backward is
  two GEMMs, a scatter and the dot products, nothing recomputed: with small images or few
  channels (e.g. 64) recomputing the bilinear weights costs about as much as the GEMMs.
* **large**: only the arguments are kept, and the backward recomputes the bilinear weights and
  the columns (:class:`_SampledConv`): the columns and the bilinear weights are several times the
  size of the arguments (a DyHead tower's forward would keep 1.9 GiB of them at 800x1216).

Results equal torchvision's up to float rounding (different summation order), outputs and all
gradients, for float32 and float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "COLUMN_BLOCK_BYTES",
    "FULL_PRECISION",
    "KEEP_COLUMNS_BYTES",
    "gather_sum",
    "sampled_deform_conv",
    "sampled_deform_conv_levels",
]


# ONNX's TensorProto.FLOAT: the exported gather-sum is float32, like the model's inference.
_ONNX_FLOAT = 1

# Sampling positions and bilinear weights are computed in these dtypes (float32 for any other).
FULL_PRECISION = (torch.float32, torch.float64)

# The size of the blocks of columns on the CPU (see the module docstring): a few MiB, about what
# a core's share of the last-level cache holds (4 MiB measured fastest of 0.5 to 8 MiB at
# 800x1216, 256 channels; 2 MiB 1.14x and 8 MiB 1.24x faster than unblocked, against 1.27x).
COLUMN_BLOCK_BYTES = 4 * 2**20

# The default ``keep_columns_bytes`` of :func:`sampled_deform_conv_levels`: training keeps the
# gathered columns of one call for the backward up to this size and recomputes larger ones. It
# covers the quickstart model's convolutions (64 channels, 8 images of 192x192: 14 MiB for the
# mid branch) and none of the R-50 model's 256-channel ones at 800x1216 (47 to 187 MiB each),
# whose training memory therefore stays that of the recomputing path.
KEEP_COLUMNS_BYTES = 32 * 2**20


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


def column_weight(weight: Tensor) -> Tensor:
    """(C_out, C, k, k) -> (C_out, k*k*C), matching columns laid out (tap, channel)."""
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _stack_rows(inputs: Sequence[Tensor], dtype: torch.dtype) -> tuple[Tensor, list]:
    """(sum_j N*H_j*W_j, C) rows of all inputs, input-major then image, row, column, in
    ``dtype``; and the first row of each input."""
    starts, start = [], 0
    for x in inputs:
        starts.append(start)
        # Not ``+=``: under tracing (ONNX export) sizes are 0-dim tensors, which it would modify
        # in place, moving the previous input's start too.
        start = start + x.shape[0] * x.shape[2] * x.shape[3]
    rows = torch.cat([x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]) for x in inputs])
    return rows.to(dtype), starts


def _corners(
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    sizes: Sequence[tuple[int, int]],
    starts: Sequence[int],
    kernel_size: int,
    stride: int,
    padding: int,
) -> tuple[Tensor, Tensor]:
    """Bilinear corners and weights of all samples of several inputs' convolutions, in one pass.

    Samples are ordered input, image, output pixel, tap. Indices are rows of the stacked rows
    (input ``j``'s first row is ``starts[j]``). Returns (index, weight), each (S, 4).
    """
    kk = kernel_size * kernel_size
    like = offsets[0]
    indices, weights = [], []
    for offset, mask, (h, w), start in zip(offsets, masks, sizes, starts):
        n, _, ho, wo = offset.shape
        off = offset.view(n, kk, 2, ho, wo).permute(0, 3, 4, 1, 2)
        # One rounding, (float) integer + offset, exactly like torchvision's kernel.
        base = tap_positions(n, (ho, wo), kernel_size, stride, padding, like)
        pos = (base + off).reshape(n, -1, 2)
        mask = mask.permute(0, 2, 3, 1).reshape(n, -1)
        # Per input (one image size each), so that under tracing (ONNX export) every size and
        # offset stays a function of the input shapes instead of a recorded constant.
        index, weight = bilinear_corners(pos[..., 0], pos[..., 1], mask, h, w)
        image_start = torch.arange(n, device=like.device).view(n, 1, 1) * (h * w) + start
        indices.append((index + image_start).reshape(-1, 4))
        weights.append(weight.reshape(-1, 4))
    return torch.cat(indices), torch.cat(weights)


class _Spec(NamedTuple):
    """What a sampled convolution needs besides its tensors."""

    num_inputs: int
    stride: int
    padding: int
    sample_dtype: torch.dtype  # of sampling positions and bilinear weights
    compute_dtype: torch.dtype  # of the matrix products and gathers


def _unpack(spec: _Spec, tensors: Sequence[Tensor]) -> tuple:
    """The flat ``tensors`` (inputs, offsets, masks, weight[, bias]) as those five."""
    j = spec.num_inputs
    bias = tensors[3 * j + 1] if len(tensors) > 3 * j + 1 else None
    return tensors[:j], tensors[j : 2 * j], tensors[2 * j : 3 * j], tensors[3 * j], bias


def _rows_and_corners(
    spec: _Spec, inputs, offsets, masks, kernel_size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """The stacked rows of the inputs (in the compute dtype), and the corners (S, 4) and bilinear
    weights (S, 4) of every sample (in the sample dtype)."""
    rows, starts = _stack_rows(inputs, spec.compute_dtype)
    offsets = [o.to(spec.sample_dtype) for o in offsets]
    masks = [m.to(spec.sample_dtype) for m in masks]
    sizes = [(x.shape[-2], x.shape[-1]) for x in inputs]
    index, wts = _corners(offsets, masks, sizes, starts, kernel_size, spec.stride, spec.padding)
    return rows, index, wts


def _pixel_blocks(num_pixels: int, row_bytes: int, device: torch.device) -> list[slice]:
    """Blocks of output pixels whose columns take about :data:`COLUMN_BLOCK_BYTES` each on the
    CPU; one block elsewhere and while tracing (an exported graph must not depend on sizes)."""
    if device.type != "cpu" or torch.jit.is_tracing():
        return [slice(0, num_pixels)]
    step = max(1, COLUMN_BLOCK_BYTES // row_bytes)
    return [slice(i, min(i + step, num_pixels)) for i in range(0, num_pixels, step)]


def _output_rows(spec: _Spec, *tensors: Tensor) -> Tensor:
    """The convolution of every input as rows, (sum_j N*Ho_j*Wo_j, C_out) in the compute dtype.

    ``tensors`` are the inputs, offsets and masks (``spec.num_inputs`` each), the weight and
    optionally the bias: flat, so that :class:`_SampledConv` can save them. Under autograd the
    columns are gathered at once (autograd keeps them); otherwise block by block.
    """
    inputs, offsets, masks, weight, bias = _unpack(spec, tensors)
    c = weight.shape[1]
    kk = weight.shape[2] * weight.shape[3]
    with torch.autocast(inputs[0].device.type, enabled=False):
        rows, index, wts = _rows_and_corners(spec, inputs, offsets, masks, weight.shape[2])
        w_cols = column_weight(weight.to(spec.compute_dtype)).t()  # (k*k*C, C_out)
        bias = None if bias is None else bias.to(spec.compute_dtype)
        num_pixels = index.shape[0] // kk
        if torch.is_grad_enabled() and any(t.requires_grad for t in (rows, wts, w_cols)):
            blocks = [slice(0, num_pixels)]
        else:
            blocks = _pixel_blocks(num_pixels, kk * c * rows.element_size(), rows.device)
        if len(blocks) == 1:
            cols = gather_sum(rows, index, wts).view(-1, kk * c)
            return cols @ w_cols if bias is None else torch.addmm(bias, cols, w_cols)
        # The bias written once, then every block's product added to it in place.
        out = rows.new_empty(num_pixels, w_cols.shape[1])
        if bias is None:
            out.zero_()
        else:
            out.copy_(bias.expand_as(out))
        for b in blocks:
            taps = slice(b.start * kk, b.stop * kk)
            cols = gather_sum(rows, index[taps], wts[taps]).view(-1, kk * c)
            out[b].addmm_(cols, w_cols)
        return out


class _SampledConv(torch.autograd.Function):
    """:func:`_output_rows` for training: keeps only its arguments for the backward.

    The gathered columns (k*k times the input) and the bilinear weights are several times larger
    than the arguments, so the backward recomputes them: gather the (output pixels, k*k*C)
    columns again, block by block (memory-bound), for ``grad_weight = grad_out^T @ columns``,
    then ``grad_columns = grad_out @ W``, scattered to the input rows and dotted with them for the
    bilinear weights' gradient. That is two GEMMs, as many as the backward of a plain
    convolution.
    """

    @staticmethod
    def forward(ctx, spec: _Spec, *tensors: Tensor) -> Tensor:
        ctx.spec = spec
        ctx.save_for_backward(*tensors)
        return _output_rows(spec, *tensors)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        spec = ctx.spec
        needs = ctx.needs_input_grad[1:]
        tensors = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, needs)]
        inputs, offsets, masks, weight, bias = _unpack(spec, tensors)
        c_out, c, k, _ = weight.shape
        with torch.enable_grad(), torch.autocast(inputs[0].device.type, enabled=False):
            rows, index, wts = _rows_and_corners(spec, inputs, offsets, masks, k)
        grad_out = grad_out.contiguous()
        w_cols = column_weight(weight.detach().to(spec.compute_dtype))  # (C_out, k*k*C)
        grad_weight = grad_bias = None
        if weight.requires_grad:
            kk = k * k
            table, sample_weights = rows.detach(), wts.detach()
            blocks = _pixel_blocks(grad_out.shape[0], kk * c * table.element_size(), table.device)
            grad_cols_w = grad_out.new_zeros(c_out, kk * c)
            for b in blocks:
                taps = slice(b.start * kk, b.stop * kk)
                cols = gather_sum(table, index[taps], sample_weights[taps]).view(-1, kk * c)
                grad_cols_w.addmm_(grad_out[b].t(), cols)
            del cols
            grad_weight = grad_cols_w.view(c_out, k, k, c).permute(0, 3, 1, 2).to(weight.dtype)
        if bias is not None and bias.requires_grad:
            grad_bias = grad_out.sum(0).to(bias.dtype)
        roots, root_grads = [], []
        if rows.requires_grad or wts.requires_grad:
            grad_cols = (grad_out @ w_cols).view(-1, c)  # one row per (output pixel, tap)
        if rows.requires_grad:
            roots.append(rows)
            root_grads.append(_scatter_rows(grad_cols, index, wts.detach(), rows.shape[0]))
        if wts.requires_grad:
            table = rows.detach()
            if table.dtype != wts.dtype:  # reduced-precision rows: dot products in wts' dtype
                grad_cols, table = grad_cols.to(wts.dtype), table.to(wts.dtype)
            roots.append(wts)
            root_grads.append(_rowwise_dots(grad_cols, table, index))
        if roots:
            del grad_cols
            torch.autograd.backward(roots, root_grads)
        grads = [t.grad for t in tensors]
        grads[3 * spec.num_inputs] = grad_weight
        if bias is not None:
            grads[3 * spec.num_inputs + 1] = grad_bias
        return (None, *grads)


def _column_bytes(spec: _Spec, offsets: Sequence[Tensor], weight: Tensor) -> int:
    """Bytes of the (output pixels, k*k*C) columns of one call, in the compute dtype."""
    pixels = sum(o.shape[0] * o.shape[2] * o.shape[3] for o in offsets)
    itemsize = torch.empty((), dtype=spec.compute_dtype).element_size()
    return pixels * weight[0].numel() * itemsize


def sampled_deform_conv_levels(
    inputs: Sequence[Tensor],
    offsets: Sequence[Tensor],
    masks: Sequence[Tensor],
    weight: Tensor,
    bias: Tensor | None = None,
    stride: int = 1,
    padding: int = 1,
    keep_columns_bytes: int = KEEP_COLUMNS_BYTES,
) -> list[Tensor]:
    """One modulated deformable convolution (one weight) applied to several inputs at once.

    Output ``j`` is ``torchvision.ops.deform_conv2d(inputs[j], offsets[j], weight, bias,
    stride, padding, mask=masks[j])``; the inputs may differ in size (e.g. pyramid levels), but
    their pixels become the rows of one matrix, so the whole convolution is one gather-sum and one
    GEMM (on the CPU in blocks of output pixels; see the module docstring).

    Args:
        inputs: (N, C, H_j, W_j) each, one batch size.
        offsets: (N, 2*k*k, Ho_j, Wo_j) each, pairs (dy, dx) per tap (torchvision's layout).
        masks: (N, k*k, Ho_j, Wo_j) each.
        weight: (C_out, C, k, k); bias: (C_out,) or None.
    Returns:
        (N, C_out, Ho_j, Wo_j) per input, channels-last memory, in the inputs' dtype. Sampling
        positions and bilinear weights are computed in float32 (float64 for float64 inputs).
        Under autocast the matrix products and gathers run in the autocast dtype (like a
        convolution's); otherwise in float32/float64.

    When a gradient is needed, the gathered columns are kept for the backward if they take at
    most ``keep_columns_bytes`` (default :data:`KEEP_COLUMNS_BYTES`; 0 never keeps them);
    otherwise only the arguments are kept and the backward recomputes the rest (see the module
    docstring). Both give the same result and gradients up to float rounding. No check of
    finiteness happens here (see :func:`~dyhead_d2.layers.deform_conv.modulated_deform_conv`).
    """
    in_dtype = inputs[0].dtype
    device_type = inputs[0].device.type
    sample_dtype = in_dtype if in_dtype in FULL_PRECISION else torch.float32
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = sample_dtype
    spec = _Spec(len(inputs), stride, padding, sample_dtype, compute_dtype)
    tensors = (*inputs, *offsets, *masks, weight) + (() if bias is None else (bias,))
    # Not while tracing (ONNX export), which records the plain ops.
    training = torch.is_grad_enabled() and not torch.jit.is_tracing()
    if training and any(t.requires_grad for t in tensors):
        if _column_bytes(spec, offsets, weight) <= keep_columns_bytes:
            out = _output_rows(spec, *tensors)
        else:
            out = _SampledConv.apply(spec, *tensors)
    else:
        out = _output_rows(spec, *tensors)
    out = out.to(in_dtype)
    outputs, start = [], 0
    for offset in offsets:
        n, _, ho, wo = offset.shape
        outputs.append(out[start : start + n * ho * wo].view(n, ho, wo, -1).permute(0, 3, 1, 2))
        start = start + n * ho * wo
    return outputs


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

    Same arguments and result as :func:`torchvision.ops.deform_conv2d` with ``mask``: the one-input
    case of :func:`sampled_deform_conv_levels`. The result is laid out channels-last (its values
    are what torchvision returns).
    """
    return sampled_deform_conv_levels([x], [offset], [mask], weight, bias, stride, padding)[0]
