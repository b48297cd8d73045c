"""The device check of ``tools/gpu_check.py``: its options, the deform_impl rows and the run.

The deform_impl rows compare ``"torchvision"`` (``tools/benchmark.py``'s reference) with
``"sampled"`` through the benchmark's own (a), (b), (c) functions and reporter interface; the
other sections are :mod:`~dyhead_d2.benchmark.device_check`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from detectron2.config import instantiate
from detectron2.utils.events import EventStorage

from ..model_zoo import get_config
from .detector import DETECTOR_CONFIG, detector_builder, detector_inference
from .device_check import (
    Row,
    cuda_test_rows,
    detection_rows,
    format_table,
    guarded,
    speed_rows,
    tf32_rows,
    trained_like_state,
)
from .timing import compare, max_abs_diff
from .towers import build_towers, make_features, parse_size, tower_forward, tower_forward_backward

__all__ = ["CHECKS", "SIZES", "build_parser", "deform_impl_rows", "main", "run"]

# Option: (full size, --small). The full sizes are the R-50 reproduction setting's (COCO-sized
# images, 4 training images per GPU as MMDetection trains it); the small ones run on CPU.
# fmt: off
SIZES = {
    "tower_size": ("800x1216", "128x192"), "tower_blocks": (6, 2), "tower_channels": (256, 64),
    "detector_size": ("800x1333", "128x192"), "train_size": ("800x1333", "128x192"),
    "train_images": (4, 2), "repeats": (5, 1), "warmup": (2, 0),
}
# fmt: on
CHECKS = {
    "a": "tower forward",
    "b": "tower forward+backward",
    "c": "detector forward",
    "d": "detector forward+backward",
}


def detector_forward_backward(args, device, build, report) -> None:
    """Like benchmark.py's (d) training step, minus the optimizer and its per-box assignment."""
    runs, losses, grads = {}, {}, {}
    for name, impl in (("reference", "torchvision"), ("project", "sampled")):
        model, make_inputs = build(impl)
        model.to(device).train()
        inputs = [{k: v.to(device) for k, v in x.items()}
                  for x in make_inputs(1, parse_size(args.detector_size))]  # fmt: skip

        def run(model=model, inputs=inputs, name=name):
            model.zero_grad(set_to_none=True)
            with EventStorage():
                out = model(inputs)
            sum(out.values()).backward()
            losses[name] = [v.detach().reshape(1) for v in out.values()]
            grads[name] = [p.grad for p in model.parameters() if p.grad is not None]

        runs[name] = run
    timings = compare(runs, device, args.repeats, args.warmup)
    diffs = {"losses": max_abs_diff(losses["project"], losses["reference"]),
             "gradients": max_abs_diff(grads["project"], grads["reference"])}  # fmt: skip
    report("d", f"1 image {args.detector_size}", timings, diffs)


def deform_impl_rows(args, device, build) -> list[Row]:
    """deform_impl "torchvision" (benchmark.py's reference) vs "sampled", tower and detector."""
    rows: list[Row] = []
    ns = argparse.Namespace(channels=args.tower_channels, blocks=args.tower_blocks, levels=5,
                            batch=1, offset_mode="official", impl="sampled", dtype="float32",
                            repeats=args.repeats, warmup=args.warmup,
                            detector_size=args.detector_size)  # fmt: skip
    tower = f"{args.tower_blocks} blocks {args.tower_channels} ch, {args.tower_size} image"

    def report(key, title, timings, diffs):  # benchmark.py's reporter interface
        where = tower if key in "ab" else title.split(", ")[-1]
        for name, t in timings.items():
            impl = "torchvision" if name == "reference" else "sampled"
            rows.append(Row(CHECKS[key], f"{impl}, {where}", t.median, "s"))
        for what, (diff, rel) in diffs.items():
            rows.append(Row(f"{CHECKS[key]} agreement", f"{what}, sampled vs torchvision",
                            diff, "max|diff|", note=f"relative {rel:.1e}"))  # fmt: skip

    ref, new = build_towers(ns, device)
    feats = make_features(ns, parse_size(args.tower_size), device)
    tower_forward(ref, new, feats, ns, device, report)
    tower_forward_backward(ref, new, feats, ns, device, report)
    del ref, new, feats
    detector_inference(build, ns, device, report)
    detector_forward_backward(args, device, build, report)
    return rows


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The options of ``tools/gpu_check.py``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny sizes: a CPU run of the whole check")
    for key, (full, small) in SIZES.items():
        help = f"default {full} ({small} with --small)"
        p.add_argument("--" + key.replace("_", "-"), type=type(full), default=None, help=help)
    p.add_argument(
        "--tests",
        default=None,
        metavar="PATH",
        help="the project's tests folder (a checkout's tests/), whose tests marked 'cuda' run "
        "first; without it the row says they were not run",
    )
    p.add_argument("--skip-tests", action="store_true", help="do not run the CUDA tests")
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p


def run(args: argparse.Namespace) -> list[Row]:
    """Run every section of the check; print the rows as they come, then the table."""
    for key, sizes in SIZES.items():
        if getattr(args, key) is None:
            setattr(args, key, sizes[args.small])
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device {device} ({device_name}); torch {torch.__version__}; TF32 by default: cuDNN "
        f"{torch.backends.cudnn.allow_tf32}, matmul {torch.backends.cuda.matmul.allow_tf32} "
        f"(float32 rows on CUDA say which they used); {torch.get_num_threads()} CPU threads",
        flush=True,
    )
    build = detector_builder("official")
    model, make_inputs = build("sampled")  # trained-like weights, made once on the CPU
    state = trained_like_state(model, make_inputs(1, parse_size(SIZES["detector_size"][1])))

    def build_trained_like(impl, **options):  # options: the builder's (memory_format, ...)
        model, make_inputs = build(impl, **options)
        model.load_state_dict(state)
        return model, make_inputs

    cfg = get_config(DETECTOR_CONFIG)

    def make_optimizer(model):  # the reproduction config's SGD
        cfg.optimizer.params.model = model
        return instantiate(cfg.optimizer)

    size = parse_size
    sections = {
        "cuda tests": lambda: cuda_test_rows(args.tests),
        # At the --small tower size whatever the options: the CPU computes the reference.
        "tf32": lambda: tf32_rows(
            device,
            SIZES["tower_channels"][1],
            SIZES["tower_blocks"][1],
            size(SIZES["tower_size"][1]),
        ),
        "deform_impl": lambda: deform_impl_rows(args, device, build_trained_like),
        "speed": lambda: speed_rows(
            build_trained_like,
            make_optimizer,
            device,
            args.train_images,
            size(args.train_size),
            size(args.detector_size),
            args.repeats,
            args.warmup,
        ),
        "detections": lambda: detection_rows(build_trained_like, device, size(args.detector_size)),
    }
    if args.skip_tests:
        del sections["cuda tests"]
    rows: list[Row] = []
    for name, section in sections.items():
        done = len(rows)
        guarded(rows, name, section)
        for r in rows[done:]:  # as it goes: a run cut short still shows what it measured
            print(f"[{name}] {r.check}, {r.setting}: {r.value} {r.unit} {r.note}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump([dataclasses.asdict(r) for r in rows], f, indent=2)
    print(format_table(rows))
    print(
        "Published: MMDetection's ATSS + DyHead R-50 reproduction setting on V100-class GPUs; "
        f"measured here on {device_name}. Different GPUs and protocols: for scale only."
    )
    return rows


def main(
    argv: list[str] | None = None, description: str | None = None, tests: str | None = None
) -> list[Row]:
    """Parse ``argv`` (``tools/gpu_check.py``'s command line; ``tests`` is the default of its
    ``--tests``) and :func:`run` the check."""
    parser = build_parser(description)
    parser.set_defaults(tests=tests)
    return run(parser.parse_args(argv))
