#!/usr/bin/env python
"""Convert a published DyHead checkpoint into a Detectron2 checkpoint for one of our configs.

    python tools/convert_checkpoint.py --source authors dyhead_r50_atss_fpn_1x.pth out.pth
    python tools/convert_checkpoint.py --source mmdet atss_r50_fpn_dyhead_4x4_1x_coco.pth out.pth
    python train_net.py --config-file CONFIG --eval-only train.init_checkpoint=out.pth

The target model is built from ``--config-file`` (default: the config that reproduces the
checkpoint, chosen from its keys) and every checkpoint entry must map onto it, with matching
shapes, and fill all of it; otherwise the tool prints every problem and exits with status 1.
An MMDetection file whose DyHead deformable convolutions carry biases is converted onto the config
built with ``model.backbone.dyhead.dcn_bias=True`` (the tool adds that override and says so).
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
from pathlib import Path

from dyhead_d2 import cli

with cli.tool_imports("tools/convert_checkpoint.py"):  # to build the target config's model
    import torch

    from dyhead_d2.checkpoint import (
        DETECTOR_SOURCES,
        CheckpointConversionError,
        convert_checkpoint,
        detect_format,
        unwrap_state_dict,
    )
    from dyhead_d2.checkpoint.mmdet import DCN_BIAS_OVERRIDE
    from dyhead_d2.checkpoint.release_configs import dcn_bias_overrides, default_config
    from dyhead_d2.model_zoo import get_config_file

PROG = "convert_checkpoint.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(
        None,
        __doc__,
        epilog="Supported sources: 'authors' (github.com/microsoft/DynamicHead: ATSS, RetinaNet, "
        "Faster R-CNN, Swin-T) and 'mmdet' (MMDetection's ATSS + DyHead: R-50 'simple' and "
        "'reproduction', Swin-L).",
    )
    parser.add_argument("--source", choices=[*DETECTOR_SOURCES, "auto"], default="auto")
    parser.add_argument(
        "--config-file",
        help="target LazyConfig (default: the config that reproduces the checkpoint)",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load the file with full pickle support (torch.load(weights_only=False)); only for "
        "files from a source you trust, when the default safe loading refuses one",
    )
    parser.add_argument("input", help="the released checkpoint (.pth)")
    parser.add_argument("output", help="where to write the converted Detectron2 checkpoint")
    cli.add_overrides_argument(parser, "key=value overrides of the target config")
    return parser.parse_args(argv)


def convert(args: argparse.Namespace) -> int:
    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=not args.trust_pickle)
    except pickle.UnpicklingError as e:
        raise cli.ToolError(
            f"{args.input} holds objects safe loading refuses ({e}); if you trust the file, "
            "add --trust-pickle"
        ) from e
    try:
        state_dict = unwrap_state_dict(checkpoint)
        source = args.source if args.source != "auto" else detect_format(state_dict)
    except (TypeError, ValueError) as e:
        raise cli.ToolError(f"{args.input}: {e}") from e
    if source not in DETECTOR_SOURCES:
        raise cli.ToolError(
            f"{args.input} is not a checkpoint of the authors' or MMDetection's detectors "
            f"(detected: {source}); pass --source"
        )
    config_file = args.config_file or get_config_file(default_config(source, state_dict))
    opts = dcn_bias_overrides(source, state_dict, args.opts)
    if opts != args.opts:
        print(f"the file's DyHead DCNs have biases: building the model with {DCN_BIAS_OVERRIDE}")
    model = cli.build_model(config_file, opts)
    try:
        conversion = convert_checkpoint(state_dict, model, source)
    except CheckpointConversionError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    # Loading strictly proves the file is complete for this config.
    model.load_state_dict(conversion.state_dict, strict=True)
    torch.save(
        {"model": conversion.state_dict, "__author__": f"{source}: {Path(args.input).name}"},
        args.output,
    )
    print(f"target config: {config_file}")
    print(conversion.summary())
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, lambda: convert(args), log_format=logging.BASIC_FORMAT)


if __name__ == "__main__":
    sys.exit(main())
