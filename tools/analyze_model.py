#!/usr/bin/env python
"""Parameters and FLOPs of a config's model, and the DyHead neck against the head it replaces.

    python tools/analyze_model.py --config-file configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py
    python tools/analyze_model.py --config-file CFG --height 800 --width 1216 --depth 3

The model is built from the config (random weights: the counts do not depend on them) and traced
by fvcore on one image of ``--height`` x ``--width`` (default 800 x 1333), which the model pads
as it does at inference (to a multiple of 128 for DyHead's ATSS). Counts are fvcore's: one
multiply-add is one FLOP; element-wise operations, pooling and the post-processing (top-k, NMS)
are not counted, and are listed. DyHead is traced with ``deform_impl="torchvision"`` (the same
function as the default CPU path), so that its deformable convolutions are
``torchvision::deform_conv2d`` operators, counted as the plain convolution of the same shapes
plus the bilinear sampling and the modulation (formula: ``dyhead_d2.analysis.flops``).

Printed: a table of the model's modules (``--depth`` levels deep; modules without FLOPs are
left out) with parameters, GFLOPs and share of the FLOPs; the FLOPs per operator; and, for a
model with a DyHead neck and a dense head, the neck and the config's head against ATSS's
original head (two towers of four 3x3 convolutions with GroupNorm, 3x3 predictors) on the same
pyramid: the paper's "no extra computational overhead" claim, checkable.
"""

from __future__ import annotations

import argparse
import sys

from dyhead_d2 import cli

with cli.tool_imports("tools/analyze_model.py"):
    from dyhead_d2.analysis.model_report import analyze, format_report
    from dyhead_d2.config import load_config

PROG = "analyze_model.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(PROG, __doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--height", type=int, default=800, help="image height (default 800)")
    parser.add_argument("--width", type=int, default=1333, help="image width (default 1333)")
    parser.add_argument(
        "--depth", type=int, default=2, help="module levels in the table (default 2)"
    )
    parser.add_argument(
        "--fvcore-table",
        action="store_true",
        help="also print fvcore's flop_count_table (parameter shapes included) to --depth",
    )
    cli.add_overrides_argument(parser)
    args = parser.parse_args(argv)
    if args.height < 1 or args.width < 1 or args.depth < 1:
        parser.error("--height, --width and --depth must be positive")
    return args


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config_file, args.opts)
    report = analyze(cfg, args.height, args.width, args.depth)
    print(format_report(report, args.config_file))
    if args.fvcore_table:
        print("\nfvcore's flop_count_table:\n" + report.table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
