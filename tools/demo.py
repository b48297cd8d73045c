#!/usr/bin/env python
"""Run a trained model on images: a picture with the detections and a COCO results JSON each.

    python tools/demo.py --config-file configs/quickstart/atss_dyhead_synthetic.py \\
        --input 'datasets/synthetic_shapes/val-*/images/00000[0-3].jpg' --output demo_out \\
        train.init_checkpoint=output/quickstart/model_final.pth

With ``--onnx model.onnx`` (written by ``tools/export_model.py``) instead of ``--config-file``,
the detections come from ``dyhead_d2.deploy.OnnxPredictor`` (onnxruntime), which resizes as the
exported config's test loader did and names the classes from the file's metadata; the JSON then
uses the contiguous class ids and the file names as image ids.

``--input`` takes image files, folders (their images, not recursive) and glob patterns (quote
them; ``**`` recurses). The model is the config's, with the weights of
``train.init_checkpoint`` (any checkpoint ``DyHeadCheckpointer`` reads), on CUDA when available
(``train.device``). Images are read and resized as the config's test loader does; boxes are
reported in the original image's pixels.

For each image ``NAME.EXT``, ``--output DIR`` gets ``NAME.png`` (boxes, class names and scores
drawn on the image, and the masks of a mask model, ``--scale`` times its size) and ``NAME.json``
(the detections in COCO's results format: ``image_id`` is the test dataset's id of that file,
else the file name; ``category_id`` is the dataset's category id; ``bbox`` is [x, y, width,
height]; ``score``; for a mask model ``segmentation``, the mask as compressed RLE).
Only detections with a score of at least ``--confidence-threshold`` are kept. Without
``--output`` the detections are only listed. Mistakes (missing config or weights, an input that
matches no image, an unreadable image) end the run with a one-line error and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dyhead_d2 import cli

with cli.tool_imports("tools/demo.py"):
    from PIL import Image
    from tqdm import tqdm

    from dyhead_d2.config import load_config
    from dyhead_d2.deploy.onnx_model import OnnxModel
    from dyhead_d2.inference import (
        DatasetIds,
        InputError,
        Predictor,
        class_name,
        coco_results,
        draw_detections,
        find_images,
        read_image,
        write_coco_results,
    )

PROG = "demo.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = cli.make_parser(PROG, __doc__)
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--config-file", metavar="FILE")
    model.add_argument("--onnx", metavar="FILE", help="an exported model.onnx to run instead")
    parser.add_argument(
        "--input",
        required=True,
        nargs="+",
        metavar="IMG_OR_GLOB_OR_FOLDER",
        help="image files, folders or (quoted) glob patterns",
    )
    parser.add_argument("--output", metavar="DIR", help="where to write the pictures and JSONs")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.3,
        metavar="T",
        help="keep detections with score >= T (default 0.3; ATSS's score is the class "
        "probability times the centerness, lower than a two-stage detector's)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="size of the pictures relative to the images (default 1)",
    )
    cli.add_overrides_argument(parser)
    args = parser.parse_args(argv)
    # "--input a.jpg b.jpg key=value": the overrides after the inputs are not inputs.
    inputs = [x for x in args.input if "=" not in x or os.path.exists(x)]
    args.opts = [x for x in args.input if x not in inputs] + list(args.opts)
    args.input = inputs
    if args.scale <= 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    if args.onnx and args.opts:
        parser.error(f"key=value overrides {args.opts} need --config-file, not --onnx")
    return args


def summary(path: str, instances, class_names, shown: int = 5) -> str:
    items = [
        f"{class_name(class_names, c)} {s:.2f}"
        for c, s in zip(instances.pred_classes.tolist(), instances.scores.tolist())
    ]
    more = f", ... ({len(items) - shown} more)" if len(items) > shown else ""
    listed = f": {', '.join(items[:shown])}{more}" if items else ""
    noun = "detection" if len(items) == 1 else "detections"
    return f"{path}: {len(items)} {noun}{listed}"


def output_names(images: list[str]) -> list[str]:
    """Each image's output name (file name without extension); two alike are an error."""
    names: dict[str, str] = {}
    for path in images:
        stem = Path(path).stem
        if stem in names:
            raise InputError(
                f"{names[stem]!r} and {path!r} would both write {stem}.png/.json; "
                "run them with different --output folders"
            )
        names[stem] = path
    return list(names)


def run(args: argparse.Namespace) -> None:
    cfg = None if args.onnx else load_config(args.config_file, args.opts)
    images = find_images(args.input)
    out_dir = Path(args.output) if args.output else None
    if out_dir is not None:
        stems = output_names(images)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--output {str(out_dir)!r} exists and is not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
    predictor = OnnxModel(args.onnx) if args.onnx else Predictor(cfg)
    ids = DatasetIds.from_dataset(predictor.dataset_name)
    class_names = predictor.metadata.get("thing_classes", None)
    dataset = predictor.dataset_name or "none"
    print(
        f"{len(images)} image(s); weights {predictor.weights}; device {predictor.device}; "
        f"classes from dataset {dataset!r}; score >= {args.confidence_threshold}"
    )
    progress = tqdm(images, unit="img", disable=True if len(images) < 2 else None)
    for i, path in enumerate(progress):
        image = read_image(path, "BGR")
        instances = predictor(image)
        instances = instances[instances.scores >= args.confidence_threshold]
        tqdm.write(summary(path, instances, class_names))
        if out_dir is None:
            continue
        rgb = image[:, :, ::-1]
        picture = draw_detections(rgb, instances, predictor.metadata, scale=args.scale)
        Image.fromarray(picture).save(out_dir / f"{stems[i]}.png")
        write_coco_results(
            out_dir / f"{stems[i]}.json", coco_results(instances, ids.image_id(path), ids)
        )
    if out_dir is not None:
        print(f"wrote {len(images)} picture(s) and COCO results JSON(s) to {out_dir}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cli.run(PROG, lambda: run(args), errors=(InputError,))


if __name__ == "__main__":
    sys.exit(main())
