#!/usr/bin/env python
"""Pictures of what a trained DyHead attends to, for one image.

    python tools/visualize_attention.py --config-file configs/quickstart/atss_dyhead_synthetic.py \\
        --input IMG --output attention_out train.init_checkpoint=output/quickstart/model_final.pth

The config's model, with the weights of ``train.init_checkpoint``, runs once on the image (read
and resized as the config's test loader does) while
:class:`dyhead_d2.layers.recorder.DyHeadRecorder` records each DyHead block with forward hooks
(the outputs are unchanged). Written to ``--output``:

* ``scale_attention.png``: the scale-aware attention, for every block and level the weight of
  each branch it fuses (low: from the finer level, mid: its own, high: from the coarser level),
  ``hardsigmoid(relu(.))``, so in [0.5, 1];
* ``offsets_block{B}_{LEVEL}.png``: the spatial-aware attention of block ``--block`` on level
  ``--level``: at ``--num-points`` positions (the centres of the highest-scoring detections,
  then a grid) the 3x3 kernel grid of the ``mid`` deformable convolution and where it actually
  samples (grid + learned offset), coloured by the modulation scalar, over the whole image and
  zoomed in. Feature position (y, x) at stride s is drawn at image position ((y + 0.5) s,
  (x + 0.5) s), the centre of its cell, scaled back to the original image;
* ``dyrelu_block{B}.png``: the task-aware attention of block ``--block``: DyReLU's
  ``a1, b1, a2, b2`` (``out = max(a1 x + b1, a2 x + b2)``) per level and channel;
* ``attention.npz``: the numbers drawn (``scale`` (blocks, levels, 3: low, mid, high; NaN where
  a level has no such branch), ``dyrelu`` (blocks, levels, 4, channels), and for the points
  ``points`` (feature row, column), ``grid``, ``sampling`` (image x, y per tap), ``modulation``).
"""

from __future__ import annotations

import argparse
import sys

import matplotlib

from dyhead_d2 import cli

with cli.tool_imports("tools/visualize_attention.py"):
    from dyhead_d2.analysis.attention import visualize_attention
    from dyhead_d2.config import load_config
    from dyhead_d2.inference import InputError

PROG = "visualize_attention.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(PROG, __doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--input", required=True, metavar="IMG", help="one image file")
    parser.add_argument("--output", required=True, metavar="DIR")
    parser.add_argument(
        "--block", type=int, default=-1, help="block of the offset and DyReLU plots (default last)"
    )
    parser.add_argument(
        "--level", default=None, help="level of the offset plot, e.g. p4 (default the finest)"
    )
    parser.add_argument("--num-points", type=int, default=6, help="points to show (default 6)")
    cli.add_overrides_argument(parser)
    args = parser.parse_args(argv)
    if args.num_points < 1:
        parser.error("--num-points must be >= 1")
    return args


def run(args: argparse.Namespace) -> None:
    matplotlib.use("Agg")  # files only, no window
    cfg = load_config(args.config_file, args.opts)
    written = visualize_attention(
        cfg, args.input, args.output, args.block, args.level, args.num_points
    )
    for path in written:
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, lambda: run(args), errors=(InputError,))


if __name__ == "__main__":
    sys.exit(main())
