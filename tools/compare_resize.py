#!/usr/bin/env python
"""Pillow (Detectron2) vs OpenCV (mmcv's default) bilinear resizing: pixel differences, and AP.

    python tools/compare_resize.py --images photo1.jpg photo2.png --short-edge 800 --max-size 1333
    python tools/compare_resize.py --config-file configs/quickstart/atss_dyhead_synthetic.py \\
        --eval-short-edge 427 train.init_checkpoint=output/quickstart/model_final.pth

With ``--images`` it prints, per image and resize, the maximum and mean absolute difference of
the two resized images (0..255 grey levels) and the share of values differing by more than 1 and
more than 4 levels. With ``--config-file`` it evaluates the config's model (weights from
``train.init_checkpoint``) on the config's test set twice, its test images resized to
``--eval-short-edge`` by Detectron2's ``ResizeShortestEdge`` (Pillow) and by
``ResizeShortestEdgeCV2`` (OpenCV), and prints both APs and their difference.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dyhead_d2 import cli

with cli.tool_imports("tools/compare_resize.py"):
    import numpy as np
    from detectron2.config import LazyCall as L
    from detectron2.config import instantiate
    from detectron2.data import transforms as T
    from detectron2.evaluation import inference_on_dataset
    from PIL import Image

    from dyhead_d2.config import load_config
    from dyhead_d2.data.cv2_resize import ResizeShortestEdgeCV2, resize_difference

PROG = "compare_resize.py"


def compare_images(paths: list[str], short_edges: list[int], max_size: int) -> None:
    print("image  size  short_edge  scale  max  mean  >1  >4")
    for path in paths:
        img = np.asarray(Image.open(path).convert("RGB"))
        for s in short_edges:
            d = resize_difference(img, s, max_size)
            print(
                f"{Path(path).name}  {img.shape[1]}x{img.shape[0]}  {s}  {d['scale']:.3f}  "
                f"{d['max']:.0f}  {d['mean']:.3f}  {100 * d['over_1']:.2f}%  "
                f"{100 * d['over_4']:.3f}%"
            )


def evaluate_both(config_file: str, opts: list[str], short_edge: int, max_size: int) -> None:
    cfg = load_config(config_file, opts)
    model = cli.build_model(cfg, weights=True)
    aps = {}
    for name, aug in (("pillow", T.ResizeShortestEdge), ("cv2", ResizeShortestEdgeCV2)):
        cfg.dataloader.test.mapper.augmentations = [
            L(aug)(short_edge_length=short_edge, max_size=max_size)
        ]
        res = inference_on_dataset(
            model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
        )
        aps[name] = res["bbox"]
        print(f"{name}: bbox AP {res['bbox']['AP']:.4f}  AP50 {res['bbox']['AP50']:.4f}")
    diff = aps["cv2"]["AP"] - aps["pillow"]["AP"]
    print(f"short edge {short_edge}: AP cv2 - AP pillow = {diff:+.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = cli.make_parser(None, __doc__)
    parser.add_argument("--images", nargs="+", default=[], help="image files to resize both ways")
    parser.add_argument("--short-edge", type=int, nargs="+", default=[800])
    parser.add_argument("--max-size", type=int, default=1333)
    parser.add_argument("--config-file", help="evaluate this config's model with both resizers")
    parser.add_argument("--eval-short-edge", type=int, default=800)
    cli.add_overrides_argument(parser, "key=value config overrides")
    args = parser.parse_args(argv)
    if not args.images and not args.config_file:
        parser.error("give --images and/or --config-file")
    return cli.run(PROG, lambda: run(args), log_format=logging.BASIC_FORMAT)


def run(args: argparse.Namespace) -> None:
    if args.images:
        compare_images(args.images, args.short_edge, args.max_size)
    if args.config_file:
        evaluate_both(args.config_file, args.opts, args.eval_short_edge, args.max_size)


if __name__ == "__main__":
    sys.exit(main())
