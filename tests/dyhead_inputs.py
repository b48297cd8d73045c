"""Tiny DyHead blocks with weights that make every term matter, and random pyramids: the inputs
of the DyHead tests."""

import torch

from dyhead_d2 import DyHead, DyHeadBlock

C = 16  # GroupNorm(16) needs a multiple of 16 channels; kept tiny so the reference is quick.


def make_block(
    offset_mode,
    dcn_bias=True,
    init_style="authors",
    zero_init_offset=False,
    seed=0,
    deform_impl="auto",
):
    torch.manual_seed(seed)
    block = DyHeadBlock(
        C,
        C,
        offset_mode=offset_mode,
        dcn_bias=dcn_bias,
        zero_init_offset=zero_init_offset,
        init_style=init_style,
        deform_impl=deform_impl,
    )
    perturb_block(block)
    return block


def perturb_block(block):
    """Offsets of a few pixels, so sampling goes fractional and out of the image; non-trivial
    GroupNorm affine, DCN bias and attention so every term of the block matters."""
    with torch.no_grad():
        block.offset_conv.weight.mul_(8.0)
        block.offset_conv.bias.uniform_(-2.0, 2.0)
        for conv in (block.conv_high, block.conv_mid, block.conv_low):
            conv.norm.weight.uniform_(0.5, 1.5)
            conv.norm.bias.uniform_(-0.3, 0.3)
            if conv.conv.bias is not None:
                conv.conv.bias.uniform_(-0.3, 0.3)
        block.scale_attn.conv.weight.normal_(0.0, 0.5)
        block.scale_attn.conv.bias.fill_(0.2)


def pyramid(batch=2, sizes=((13, 19), (7, 10), (4, 5)), channels=C, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, h, w, generator=g) for h, w in sizes]


def make_tower(**kw):
    """A two-block DyHead of C channels with the authors' options (``kw`` overrides them)."""
    args = dict(offset_mode="official", dcn_bias=True, zero_init_offset=False, init_style="authors")
    args.update(kw)
    return DyHead(C, C, num_blocks=2, **args)
