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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from dyhead_d2._detectron2 import require_detectron2  # noqa: E402

require_detectron2("tools/convert_checkpoint.py")  # to build the target config's model

from detectron2.config import instantiate  # noqa: E402

from dyhead_d2.checkpoint import (  # noqa: E402
    DETECTOR_SOURCES,
    CheckpointConversionError,
    convert_checkpoint,
    detect_format,
    unwrap_state_dict,
)
from dyhead_d2.checkpoint.mmdet import DCN_BIAS_OVERRIDE, has_dcn_bias  # noqa: E402
from dyhead_d2.engine import ConfigError, load_config  # noqa: E402

# The config that reproduces each released checkpoint, told apart by its keys.
CONFIGS = {
    "authors_atss": "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py",
    "authors_retinanet": "configs/COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py",
    "authors_faster_rcnn": "configs/COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
    "authors_swin_t": "configs/COCO/atss_dyhead_swin_T_FPN_2x_ms.py",
    "mmdet_simple": "configs/COCO/atss_dyhead_R_50_FPN_1x.py",
    "mmdet_repro": "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x_mmdet.py",
    "mmdet_swin_l": "configs/COCO/atss_dyhead_swin_L_FPN_2x_ms.py",
}


def default_config(source: str, state_dict: dict) -> str:
    """The config of the released model a checkpoint of ``source`` looks like."""
    keys = state_dict.keys()
    if source == "authors":
        if any(k.startswith("roi_heads.") for k in keys):
            return CONFIGS["authors_faster_rcnn"]
        if any(k.startswith("head.cls_subnet.") for k in keys):
            return CONFIGS["authors_retinanet"]
        if any(".bottom_up.patch_embed." in k for k in keys):
            return CONFIGS["authors_swin_t"]
        return CONFIGS["authors_atss"]
    if any(k.startswith("backbone.patch_embed.") for k in keys):
        return CONFIGS["mmdet_swin_l"]
    # The simple setting predicts with 3x3 convolutions, the reproduction with 1x1.
    cls = state_dict.get("bbox_head.atss_cls.weight")
    if cls is not None and tuple(cls.shape[-2:]) == (3, 3):
        return CONFIGS["mmdet_simple"]
    return CONFIGS["mmdet_repro"]


def dcn_bias_overrides(source: str, state_dict: dict, opts: list[str]) -> list[str]:
    """``opts`` plus the override that gives DyHead's DCNs a bias when an MMDetection file has
    them (the files of MMDetection's DyHead pull-request branch may), unless ``opts`` sets it."""
    if source != "mmdet" or not has_dcn_bias(state_dict):
        return list(opts)
    if any(o.split("=", 1)[0] == "model.backbone.dyhead.dcn_bias" for o in opts):
        return list(opts)
    return [*opts, DCN_BIAS_OVERRIDE]


def build_model(config_file: str, overrides: list[str]):
    """The config's model, with its random initialisation (only names and shapes are used)."""
    cfg = load_config(config_file, overrides)
    return instantiate(cfg.model)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="key=value overrides of the target config"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        checkpoint = torch.load(args.input, map_location="cpu", weights_only=not args.trust_pickle)
    except pickle.UnpicklingError as e:
        print(
            f"convert_checkpoint.py: error: {args.input} holds objects safe loading refuses "
            f"({e}); if you trust the file, add --trust-pickle",
            file=sys.stderr,
        )
        return 2
    try:
        state_dict = unwrap_state_dict(checkpoint)
        source = args.source if args.source != "auto" else detect_format(state_dict)
    except (TypeError, ValueError) as e:
        print(f"convert_checkpoint.py: error: {args.input}: {e}", file=sys.stderr)
        return 2
    if source not in DETECTOR_SOURCES:
        print(
            f"convert_checkpoint.py: error: {args.input} is not a checkpoint of the authors' or "
            f"MMDetection's detectors (detected: {source}); pass --source",
            file=sys.stderr,
        )
        return 2
    config_file = args.config_file or str(ROOT / default_config(source, state_dict))
    opts = dcn_bias_overrides(source, state_dict, args.opts)
    if opts != args.opts:
        print(f"the file's DyHead DCNs have biases: building the model with {DCN_BIAS_OVERRIDE}")
    try:
        model = build_model(config_file, opts)
    except ConfigError as e:
        print(f"convert_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    try:
        conversion = convert_checkpoint(state_dict, model, source)
    except CheckpointConversionError as e:
        print(f"convert_checkpoint.py: error: {e}", file=sys.stderr)
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


if __name__ == "__main__":
    sys.exit(main())
