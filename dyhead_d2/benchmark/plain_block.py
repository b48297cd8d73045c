"""Benchmark (e): one DyHead block vs the same block with plain 3x3 convolutions.

The plain-convolution variant keeps every part of the block but the deformable sampling: each
deformable conv becomes ``F.conv2d`` with the same weights, strides and padding, its output
multiplied by the mean modulation mask so that the offset conv stays in the graph.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ..layers.deform_conv import guard_non_finite, resolve_deform_impl
from ..layers.dyhead import guard_offsets_and_masks
from ..layers.offset_modes import read_high_branch_offset
from .timing import compare
from .towers import autocast_ctx, repeats_of

__all__ = ["block_vs_plain", "guard_vs_block", "plain_block", "plain_branches"]


def plain_branches(block, features, masks):
    """The three convolutions of every level as plain 3x3 ``F.conv2d`` (same weights/strides)."""
    mids, lows, highs = [], [], []
    last = len(features) - 1
    for i, x in enumerate(features):
        mids.append(_plain(block.conv_mid.conv, x, masks, i))
        lows.append(_plain(block.conv_low.conv, features[i - 1], masks, i) if i > 0 else None)
        if i < last:
            size = features[i + 1].shape[-2:]
            highs.append(_plain(block.conv_high.conv, features[i + 1], masks, i, size, block))
        else:
            highs.append(None)
    return mids, lows, highs


def _plain(conv, x, masks, level, high_size=None, block=None):
    out = F.conv2d(x, conv.weight, conv.bias, stride=conv.stride, padding=conv.padding)
    if masks is None:
        return out
    mask = masks[level]
    if high_size is not None:
        mask = read_high_branch_offset(mask, tuple(high_size), block.offset_mode, is_mask=True)
    return out * mask.mean(dim=1, keepdim=True)


def plain_block(block, features):
    masks = [mask for _, mask in (block.offset_and_mask(x) for x in features)]
    return block.fuse_levels(*plain_branches(block, features, masks))


def block_vs_plain(new, feats, args, device, report) -> None:
    """(e): the project's first block vs plain convs: whole block, guard, convs alone."""
    block = new.blocks[0]
    with torch.no_grad():
        om = [block.offset_and_mask(x) for x in feats]
    offsets = [o for o, _ in om]
    masks = [m for _, m in om]

    def deform_convs(inputs):
        # Offsets and masks are leaves here; in backward they get their gradients as in training.
        grad = torch.is_grad_enabled()
        off = [o.detach().requires_grad_(grad) for o in offsets]
        msk = [m.detach().requires_grad_(grad) for m in masks]
        mids, lows, highs = block.sampled_branches(inputs, off, msk)
        return [t for t in mids + lows + highs if t is not None]

    def plain_convs(inputs):
        mids, lows, highs = plain_branches(block, inputs, None)
        return [t for t in mids + lows + highs if t is not None]

    cases = {
        "block": (lambda i: block(i), lambda i: plain_block(block, i)),
        "convs": (deform_convs, plain_convs),
    }
    impl = resolve_deform_impl(block.deform_impl, device)
    guard_vs_block(block, feats, impl, args, device, report)
    for name, (deform, plain) in cases.items():
        for backward in (False, True):

            def run(fn, backward=backward):
                block.zero_grad(set_to_none=True)
                inputs = [f.detach().requires_grad_(backward) for f in feats]
                ctx = nullcontext() if backward else torch.no_grad()
                with ctx, autocast_ctx(args, device):
                    outs = fn(inputs)
                if backward:
                    torch.stack([o.float().sum() for o in outs]).sum().backward()

            runs = {
                "plain conv": lambda fn=plain, run=run: run(fn),
                f"deformable ({impl})": lambda fn=deform, run=run: run(fn),
            }
            t = compare(runs, device, **repeats_of(args))
            what = "forward + backward" if backward else "forward"
            report(f"e/{name}", f"one block vs plain convs: {name}, {what}", t, {})


def guard_vs_block(block, feats, impl, args, device, report) -> None:
    """(e/guard): the non-finite guard alone vs the block's forward.

    The guard is the block's check and sanitising of every level's offset_conv output (one
    reduction per level, no host read: the tower reads all blocks' checks once) and, on the
    per-level ``"torchvision"`` path, the sanitising of offsets and masks in each of the three
    deformable convs of every level (counted on the full-size maps).
    """
    with torch.no_grad():
        raw = [block.offset_conv(x) for x in feats]
        om = [block.offset_and_mask(x) for x in feats]

    def guard():
        with torch.no_grad(), autocast_ctx(args, device):
            guard_offsets_and_masks(raw)
            if impl == "torchvision":
                conv = block.conv_mid.conv
                for offset, mask in om:
                    for _ in range(3):
                        guard_non_finite(offset, mask, conv.bias, conv.weight)

    def forward():
        with torch.no_grad(), autocast_ctx(args, device):
            block(feats)

    t = compare({"block forward": forward, "guard": guard}, device, **repeats_of(args))
    report("e/guard", "the non-finite guard alone vs the block's forward", t, {})
