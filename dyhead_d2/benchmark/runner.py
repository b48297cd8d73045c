"""The driver of ``tools/benchmark.py``: its options and the run of the chosen benchmarks.

Benchmarks: (a), (b) :mod:`~dyhead_d2.benchmark.towers`, (e)
:mod:`~dyhead_d2.benchmark.plain_block`, (c), (d) :mod:`~dyhead_d2.benchmark.detector`, (f)
:mod:`~dyhead_d2.benchmark.deployed`, (g) :mod:`~dyhead_d2.benchmark.padding`. The tool's
docstring describes each and how it measures.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from ..cli import upstream_warnings_silenced
from ..layers.deform_conv import resolve_deform_impl
from ..progress import progress_lines
from .plain_block import block_vs_plain
from .report import make_reporter
from .towers import (
    DTYPES,
    build_towers,
    make_features,
    parse_size,
    tower_forward,
    tower_forward_backward,
)

__all__ = ["BENCHMARKS", "DETECTOR_BENCHMARKS", "build_parser", "main", "run"]

BENCHMARKS = ("a", "b", "c", "d", "e", "f", "g")
DETECTOR_BENCHMARKS = ("c", "d", "f", "g")  # need detectron2; run once per device


def _which(text: str) -> list[str]:
    which = [w.strip() for w in text.split(",") if w.strip()]
    for w in which:
        if w not in BENCHMARKS:
            raise argparse.ArgumentTypeError(f"unknown benchmark {w!r}")
    return which


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The options of ``tools/benchmark.py``; ``run`` reads them from the parsed namespace."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--sizes", nargs="+", default=["800x1216"], help="image sizes HxW")
    p.add_argument("--levels", type=int, default=5, help="pyramid levels from P3 (5: P3..P7)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--channels", type=int, default=256)
    p.add_argument("--offset-mode", default="official")
    p.add_argument("--impl", default="auto", help="the project's deform_impl (auto|sampled|...)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="autocast dtype")
    p.add_argument("--device", nargs="+", default=None, help="default: cpu, and cuda if present")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--which", default="a,b,e", type=_which, help="comma-separated subset of a,b,c,d,e,f,g"
    )
    p.add_argument("--detector-size", default="800x1216", help="image HxW of (c), (f), (g)")
    p.add_argument("--train-size", default="512x512", help="image HxW of the two images of (d)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    return p


def run(args: argparse.Namespace) -> list[dict]:
    """Run ``args.which`` on each device; print the tables and return one record per row."""
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.device or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    which = args.which
    results: list[dict] = []
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; reference = per level, per branch, "
        "torchvision.ops.deform_conv2d; times are medians"
    )
    for dev_name in devices:
        device = torch.device(dev_name)
        tower_benchmarks = [w for w in which if w not in DETECTOR_BENCHMARKS]
        ref, new = build_towers(args, device) if tower_benchmarks else (None, None)
        for size in args.sizes if tower_benchmarks else []:
            image = parse_size(size)
            feats = make_features(args, image, device)
            levels = "..".join(f"{h}x{w}" for h, w in (f.shape[-2:] for f in feats))
            header = (
                f"{device.type} {args.dtype}, image {size}, levels {levels}, batch {args.batch}, "
                f"{args.blocks} blocks, {args.channels} ch, project deform_impl={args.impl!r} "
                f"-> {resolve_deform_impl(args.impl, device)!r}"
            )
            report = make_reporter(header, results)
            for w in which:
                if w == "a":
                    tower_forward(ref, new, feats, args, device, report)
                elif w == "b":
                    tower_forward_backward(ref, new, feats, args, device, report)
                elif w == "e":
                    block_vs_plain(new, feats, args, device, report)
                # c, d, f: once per device, below
        detector = [w for w in which if w in DETECTOR_BENCHMARKS]
        if detector:
            header = (
                f"{device.type} {args.dtype}, project deform_impl={args.impl!r} "
                f"-> {resolve_deform_impl(args.impl, device)!r}"
            )
            report = make_reporter(header, results)
            from .deployed import deployed_inference
            from .detector import detector_builder, detector_inference, training_step
            from .padding import padding_cost

            builder = detector_builder(args.offset_mode)
            for w in detector:
                if w == "f":
                    deployed_inference(args, device, report)
                elif w == "g":
                    padding_cost(builder, args, device, report)
                else:
                    step = detector_inference if w == "c" else training_step
                    step(builder, args, device, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


def main(argv: list[str] | None = None, description: str | None = None) -> list[dict]:
    """Parse ``argv`` (``tools/benchmark.py``'s command line) and :func:`run` it, without the
    deprecation warnings fvcore and detectron2 raise on this torch version (rows c, d and f import
    them lazily)."""
    args = build_parser(description).parse_args(argv)
    with upstream_warnings_silenced(), progress_lines("benchmark.py: "):
        return run(args)
