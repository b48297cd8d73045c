#!/usr/bin/env python
"""Export a LazyConfig detector to ONNX that stock onnxruntime runs.

    python tools/export_model.py --config-file configs/quickstart/atss_dyhead_synthetic.py \\
        --format onnx --output exported train.init_checkpoint=output/quickstart/model_final.pth

Writes ``DIR/model.onnx`` with the weights of ``train.init_checkpoint``. The file has one input,
``image``: float32 (3, H, W), pixel values 0-255 in the config's input format, already resized as
the config's test loader resizes (H and W are dynamic), and three outputs after NMS: ``boxes``
(N, 4) float32 XYXY in that input's pixels, ``scores`` (N,) float32 and ``classes`` (N,) int64;
a mask model (Mask R-CNN) adds ``masks`` (N, M, M) float32, each detection's mask probabilities on
its box (M = 28 for Detectron2's mask head), which ``OnnxPredictor`` pastes into the image.
It uses standard ONNX ops only; it is checked with the ONNX checker and run by onnxruntime on a
sample image whose detections are compared with PyTorch's. The test resizing and the class names
are stored in the file's metadata: ``dyhead_d2.deploy.OnnxPredictor`` (onnxruntime, numpy,
Pillow) and ``tools/demo.py --onnx`` use them. ``--deform-op`` picks how DyHead's deformable
convolutions are written: ``DeformConv`` (default; ONNX's own op, opset 19, onnxruntime >= 1.25
runs it natively, the faster file) or ``gather`` (gathers and matrix products, opset 17, for
runtimes without DeformConv; needs ``deform_impl="sampled"`` or ``"auto"``). (``torch.export``
cannot capture the detector yet: with a dynamic H and W, Detectron2's padding turns the sizes
into data-dependent symbols, and the export stops at the first data-dependent Python branch, the
model's check that the image is finite; hence ONNX only.) Mistakes end the run with a one-line
error and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dyhead_d2 import cli

with cli.tool_imports("tools/export_model.py"):
    from dyhead_d2.config import load_config
    from dyhead_d2.deploy.export import DEFORM_OPS, ExportError, describe_onnx, export_onnx

PROG = "export_model.py"


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 320x448, got {text!r}") from None
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(PROG, __doc__)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to write into")
    parser.add_argument(
        "--deform-op",
        choices=list(DEFORM_OPS),
        default="DeformConv",
        help="how the deformable convolutions are exported (default DeformConv)",
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default: the lowest the --deform-op allows, 19 or 17)",
    )
    parser.add_argument(
        "--sample-size",
        type=parse_size,
        default=(320, 448),
        metavar="HxW",
        help="image size traced and checked (default 320x448)",
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="skip running the file with onnxruntime on the sample image",
    )
    cli.add_overrides_argument(parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    cfg = load_config(args.config_file, args.opts)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--output {str(out_dir)!r} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = export_onnx(
        cfg,
        out_dir / "model.onnx",
        config_file=args.config_file,
        deform_op=args.deform_op,
        opset=args.opset,
        sample_size=args.sample_size,
        verify=not args.no_verify,
    )
    print(f"wrote {result.path} (ONNX checker: ok; standard ops only)")
    print(describe_onnx(result.path))
    h, w = result.sample_size
    if result.parity is not None:
        print(f"onnxruntime vs PyTorch on a {h}x{w} sample image: {result.parity}")
    if result.max_mask_diff is not None:
        print(
            f"masks: largest probability difference {result.max_mask_diff:.2e} over the "
            "matched detections"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, lambda: run(args), errors=(ExportError,))


if __name__ == "__main__":
    sys.exit(main())
