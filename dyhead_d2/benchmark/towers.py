"""Benchmarks (a) and (b): the DyHead tower forward, and forward + backward, reference vs project.

The reference is ``DyHead(..., deform_impl="torchvision")`` (the authors' per-level, per-branch
algorithm); the project is the same module with ``deform_impl=args.impl`` and the same weights.
``args`` are ``tools/benchmark.py``'s options (:func:`~dyhead_d2.benchmark.runner.add_arguments`).
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch

from ..layers import DyHead
from .timing import compare, max_abs_diff

__all__ = [
    "DTYPES",
    "autocast_ctx",
    "build_towers",
    "make_features",
    "parse_size",
    "pyramid_sizes",
    "repeats_of",
    "saved_for_backward",
    "tower_forward",
    "tower_forward_backward",
]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def pyramid_sizes(image: tuple[int, int], levels: int, stride: int = 8) -> list[tuple[int, int]]:
    """P3.. sizes of an image: ceil(size / 8), then halved and rounded up per level (as FPN)."""
    h, w = math.ceil(image[0] / stride), math.ceil(image[1] / stride)
    sizes = [(h, w)]
    for _ in range(levels - 1):
        h, w = (h + 1) // 2, (w + 1) // 2
        sizes.append((h, w))
    return sizes


def build_towers(args, device: torch.device) -> tuple[DyHead, DyHead]:
    """(reference, project): identical weights, different ``deform_impl``."""
    torch.manual_seed(0)
    kw = dict(
        offset_mode=args.offset_mode,
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
    )
    ref = DyHead(args.channels, args.channels, args.blocks, deform_impl="torchvision", **kw)
    with torch.no_grad():
        for block in ref.blocks:
            # Offsets of a pixel or two (a trained model's scale) instead of the near-zero init.
            block.offset_conv.weight.normal_(0.0, 0.05)
    new = DyHead(args.channels, args.channels, args.blocks, deform_impl=args.impl, **kw)
    new.load_state_dict(ref.state_dict())
    return ref.to(device), new.to(device)


def make_features(args, image, device) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sizes = pyramid_sizes(image, args.levels)
    return [torch.randn(args.batch, args.channels, h, w, generator=g).to(device) for h, w in sizes]


def autocast_ctx(args, device):
    if args.dtype == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[args.dtype])


def repeats_of(args) -> dict:
    """The ``repeats`` and ``warmup`` keywords of :func:`~dyhead_d2.benchmark.timing.compare`."""
    return {"repeats": args.repeats, "warmup": args.warmup}


def tower_forward(ref, new, feats, args, device, report) -> None:
    def run(model):
        with torch.no_grad(), autocast_ctx(args, device):
            return model(feats)

    t = compare(
        {"reference": lambda: run(ref), "project": lambda: run(new)}, device, **repeats_of(args)
    )
    report("a", "tower forward", t, {"outputs": max_abs_diff(run(new), run(ref))})


def tower_forward_backward(ref, new, feats, args, device, report) -> None:
    g = torch.Generator().manual_seed(2)
    cotangents = [torch.randn(f.shape, generator=g).to(device) for f in feats]

    def run(model):
        model.zero_grad(set_to_none=True)
        inputs = [f.detach().requires_grad_() for f in feats]
        with autocast_ctx(args, device):
            outs = model(inputs)
        # A mean-reduced loss, as in training, with random weights so every output matters.
        loss = sum((o.float() * c).mean() for o, c in zip(outs, cotangents))
        loss.backward()
        grads = [i.grad for i in inputs] + [p.grad for p in model.parameters()]
        return [o.detach() for o in outs], grads

    t = compare(
        {"reference": lambda: run(ref), "project": lambda: run(new)}, device, **repeats_of(args)
    )
    for name, model in (("reference", ref), ("project", new)):
        t[name].saved = saved_for_backward(model, feats, args, device)
    out_new, grad_new = run(new)
    out_ref, grad_ref = run(ref)
    report(
        "b",
        "tower forward + backward",
        t,
        {
            "outputs": max_abs_diff(out_new, out_ref),
            "gradients": max_abs_diff(grad_new, grad_ref),
        },
    )


def saved_for_backward(model, feats, args, device) -> int:
    """Bytes of the distinct storages autograd keeps for the backward of one forward."""
    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(s.device, s.data_ptr())] = s.nbytes()
        return t

    inputs = [f.detach().requires_grad_() for f in feats]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast_ctx(args, device):
        model(inputs)
    return sum(storages.values())
