"""A DyHead block computed for all pyramid levels at once (the ``"sampled"`` path).

:meth:`DyHeadBlock.forward_per_level` follows the paper: for every level, predict offset/mask,
run three deformable convolutions, normalise, attend, fuse. The convolution weights are shared by
all levels, so here every branch is one large computation over all levels instead of one small
one per level:

* all levels' pixels become the rows of one (sum_l N*H_l*W_l, C) matrix;
* ``mid`` (stride 1, every level) and ``high`` (stride 1, levels 1.. as inputs) are computed taps
  first (see :mod:`.sampled_deform_conv`): one GEMM of those rows with the branch's weight, then
  one gather-sum producing every level's output;
* ``low`` (stride 2, levels ..L-2 as inputs) gathers its columns for every level with one
  gather-sum, then one GEMM;
* normalisation, scale attention, fusion and DyReLU then run per level, as before.

Same parameters and, up to float rounding, the same results as the per-level path (outputs and
gradients; tested against it and against a literal re-implementation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .offset_modes import read_high_branch_offset
from .sampled_deform_conv import (
    bilinear_corners,
    column_weight,
    gather_sum,
    tap_positions,
    tap_weight,
)

__all__ = ["assemble_levels", "fused_block_forward", "fused_deform_branches"]

_FULL_PRECISION = (torch.float32, torch.float64)


class _Level:
    """Where one level's pixels sit in the stacked row matrix."""

    def __init__(self, size: tuple[int, int], start: int, n: int):
        self.size = size
        self.start = start
        self.rows = n * size[0] * size[1]


def _stack_rows(features: Sequence[Tensor], dtype: torch.dtype) -> tuple[Tensor, list[_Level]]:
    """(sum_l N*H_l*W_l, C) rows, level-major then image, row, column; and each level's place."""
    n = features[0].shape[0]
    levels, start = [], 0
    for f in features:
        levels.append(_Level((f.shape[-2], f.shape[-1]), start, n))
        # Not ``+=``: under tracing (ONNX export) sizes are 0-dim tensors, which it would modify
        # in place, moving the previous level's start too.
        start = start + levels[-1].rows
    rows = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in features])
    return rows.to(dtype), levels


class _Job:
    """One deformable conv of one level: its offset/mask and the level it samples."""

    def __init__(self, offset: Tensor, mask: Tensor, source: _Level, conv):
        self.offset = offset
        self.mask = mask
        self.source = source
        self.conv = conv


def _sample(jobs: list[_Job], first_row: int, taps_first: bool) -> tuple[Tensor, Tensor]:
    """Bilinear corners and weights of all samples of several convs, in one pass.

    Samples are ordered job, image, output pixel, tap. Indices are rows of the table the convs
    gather from: pixel rows counted from ``first_row`` of the stacked rows, or, ``taps_first``,
    rows ``pixel * k*k + tap`` of the taps-first table. Returns (index, weight), each (S, 4).
    """
    conv = jobs[0].conv
    kk = conv.kernel_size**2
    like = jobs[0].offset
    indices, weights = [], []
    for job in jobs:
        n, _, ho, wo = job.offset.shape
        off = job.offset.view(n, kk, 2, ho, wo).permute(0, 3, 4, 1, 2)
        # One rounding, (float) integer + offset, exactly like torchvision's kernel.
        base = tap_positions(n, (ho, wo), conv.kernel_size, job.conv.stride, conv.padding, like)
        pos = (base + off).reshape(n, -1, 2)
        mask = job.mask.permute(0, 2, 3, 1).reshape(n, -1)
        h, w = job.source.size
        # Per job (one image size each), so that under tracing (ONNX export) every size and
        # offset stays a function of the input shapes instead of a recorded constant.
        index, weight = bilinear_corners(pos[..., 0], pos[..., 1], mask, h, w)
        first = job.source.start - first_row
        image_start = torch.arange(n, device=like.device).view(n, 1, 1) * (h * w) + first
        indices.append((index + image_start).reshape(-1, 4))
        weights.append(weight.reshape(-1, 4))
    index, weight = torch.cat(indices), torch.cat(weights)
    if taps_first:
        tap = torch.arange(index.shape[0], device=index.device) % kk
        index = index * kk + tap.unsqueeze(1)
    return index, weight


def _taps_first(rows: Tensor, jobs: list[_Job], first_row: int) -> Tensor:
    """Stride-1 deformable convs of several levels: one GEMM over ``rows``, one gather-sum.

    Returns the outputs of all jobs stacked as rows, (sum N*Ho*Wo, C_out).
    """
    conv = jobs[0].conv
    weight = conv.weight.to(rows.dtype)
    kk = conv.kernel_size**2
    table = (rows @ tap_weight(weight).t()).view(-1, weight.shape[0])
    index, wts = _sample(jobs, first_row, taps_first=True)
    out = gather_sum(table, index.view(-1, 4 * kk), wts.view(-1, 4 * kk))
    return out if conv.bias is None else out + conv.bias.to(out.dtype)


def _columns_first(rows: Tensor, jobs: list[_Job], first_row: int) -> Tensor:
    """Deformable convs of several levels: one gather-sum for all columns, then one GEMM."""
    conv = jobs[0].conv
    weight = conv.weight.to(rows.dtype)
    kk = conv.kernel_size**2
    index, wts = _sample(jobs, first_row, taps_first=False)
    cols = gather_sum(rows, index, wts).view(-1, kk * rows.shape[1])
    w_cols = column_weight(weight).t()
    if conv.bias is None:
        return cols @ w_cols
    return torch.addmm(conv.bias.to(cols.dtype), cols, w_cols)


def _level_view(out_rows: Tensor, start: int, n: int, size: tuple[int, int]) -> Tensor:
    """Rows [start, start + n*h*w) as an (N, C, h, w) tensor (channels-last memory)."""
    h, w = size
    return out_rows[start : start + n * h * w].view(n, h, w, -1).permute(0, 3, 1, 2)


def fused_deform_branches(
    block, features: Sequence[Tensor], offsets: Sequence[Tensor], masks: Sequence[Tensor]
) -> tuple[list[Tensor], list[Tensor | None], list[Tensor | None]]:
    """The three deformable convolutions of ``block`` on every level, before normalisation.

    Returns per level ``mid``, ``low`` (None on level 0) and ``high`` (None on the last level,
    at the coarser level's size, not yet upsampled), each (N, C_out, h, w) in channels-last
    memory, in the input dtype. ``offsets``/``masks`` are :meth:`offset_and_mask` of each level.
    Sampling positions and bilinear weights are computed in float32 (float64 for float64
    inputs). Under autocast the matrix products and gathers run in the autocast dtype (like a
    convolution's); otherwise in float32/float64 (float32 for other input dtypes).
    """
    num_levels = len(features)
    n = features[0].shape[0]
    in_dtype = features[0].dtype
    device_type = features[0].device.type
    # Sampling positions and bilinear weights always in full precision; products and gathers in
    # the autocast dtype under autocast (the deformable conv's matrix work, like a conv's).
    sample_dtype = in_dtype if in_dtype in _FULL_PRECISION else torch.float32
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = sample_dtype
    mids, lows, highs = [], [None], []
    with torch.autocast(device_type, enabled=False):
        offsets = [o.to(sample_dtype) for o in offsets]
        masks = [m.to(sample_dtype) for m in masks]
        rows, levels = _stack_rows(features, compute_dtype)

        mid_conv, high_conv, low_conv = (
            b.conv for b in (block.conv_mid, block.conv_high, block.conv_low)
        )
        mid_jobs = [_Job(offsets[i], masks[i], levels[i], mid_conv) for i in range(num_levels)]
        mid = _taps_first(rows, mid_jobs, 0).to(in_dtype)
        mids = [_level_view(mid, lv.start, n, lv.size) for lv in levels]
        if num_levels > 1:
            # high: the conv runs on level i + 1 with level i's offset/mask read at that size.
            first = levels[1].start
            high_jobs = []
            for i in range(num_levels - 1):
                size = levels[i + 1].size
                off = read_high_branch_offset(offsets[i], size, block.offset_mode)
                msk = read_high_branch_offset(masks[i], size, block.offset_mode, is_mask=True)
                high_jobs.append(_Job(off, msk, levels[i + 1], high_conv))
            high = _taps_first(rows[first:], high_jobs, first).to(in_dtype)
            highs = [_level_view(high, lv.start - first, n, lv.size) for lv in levels[1:]]
            # low: the stride-2 conv runs on level i - 1 with level i's offset/mask.
            low_jobs = [
                _Job(offsets[i], masks[i], levels[i - 1], low_conv) for i in range(1, num_levels)
            ]
            low = _columns_first(rows[: levels[-1].start], low_jobs, 0).to(in_dtype)
            lows += [_level_view(low, lv.start - first, n, lv.size) for lv in levels[1:]]
    return mids, lows, highs + [None]


def assemble_levels(block, features, mids, lows, highs) -> list[Tensor]:
    """The rest of the block from its branch outputs: GroupNorm, then the block's
    ``fuse_branches`` (upsampling of ``high``, scale attention, mean, DyReLU), level by level."""
    outputs = []
    for i in range(len(features)):
        low = None if lows[i] is None else block.conv_low.norm(lows[i])
        high = None if highs[i] is None else block.conv_high.norm(highs[i])
        outputs.append(block.fuse_branches(block.conv_mid.norm(mids[i]), low, high))
    return outputs


def fused_block_forward(
    block,
    features: Sequence[Tensor],
    offsets: Sequence[Tensor] | None = None,
    masks: Sequence[Tensor] | None = None,
) -> list[Tensor]:
    """``block(features)`` for a :class:`~dyhead_d2.layers.dyhead.DyHeadBlock`, all levels fused.

    ``features`` must already be a valid pyramid (see ``check_pyramid``); ``offsets`` and
    ``masks`` are the block's :meth:`offset_and_mask` of every level, computed here when not given.
    """
    if offsets is None or masks is None:
        offsets, masks = zip(*(block.offset_and_mask(x) for x in features))
    return assemble_levels(block, features, *fused_deform_branches(block, features, offsets, masks))
