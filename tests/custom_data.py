"""Small COCO-format datasets unlike the quickstart's, written the way a user would have them.

Images come from the synthetic generator; the JSON keeps a subset of its classes under
non-contiguous ids (the other shapes stay in the pictures, unlabelled: things not to detect) and
has images without any annotation. :func:`mix_segmentation_formats` writes the masks in every
form COCO allows: polygons, compressed and uncompressed RLE, crowd regions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_util

from dyhead_d2.data import build_synthetic_coco

# Generator class id -> (dataset id, name): circle and square, as ids 7 and 42.
KEPT = {1: (7, "circle"), 2: (42, "square")}


def write_custom_split(
    root: Path,
    split: str,
    num_images: int,
    *,
    kept: dict[int, tuple[int, str]] | None = None,
    image_size: int = 128,
    seed: int = 1,
) -> tuple[Path, Path]:
    """Write ``root/<split>/`` (images) and ``root/<split>.json``; returns ``(json, images)``.

    Category ids are those of ``kept`` (default :data:`KEPT`), listed in reverse order (JSON
    order must not matter); annotations of the other classes are left out; image and
    annotation ids start at 1000 so that they differ from list positions.
    """
    kept = kept or KEPT
    image_dir, json_file = build_synthetic_coco(
        root / "_generated",
        split,
        num_images,
        image_size=image_size,
        seed=seed,
        min_object_size=16,
        max_objects=8,
        empty_fraction=0.1,
        min_visible_fraction=0.6,
    )
    coco = json.loads(json_file.read_text())
    out_images = root / split
    shutil.copytree(image_dir, out_images, dirs_exist_ok=True)
    images = [{**img, "id": img["id"] + 1000} for img in coco["images"]]
    annotations = [
        {**ann, "id": 1000 + i, "image_id": ann["image_id"] + 1000, "category_id": kept[cid][0]}
        for i, ann in enumerate(coco["annotations"])
        if (cid := ann["category_id"]) in kept
    ]
    categories = [
        {"id": new_id, "name": name, "supercategory": "shape"}
        for new_id, name in sorted(kept.values(), reverse=True)
    ]
    out_json = root / f"{split}.json"
    out_json.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return out_json, out_images


def polygons_of(mask: np.ndarray) -> list[list[float]]:
    """A binary mask's outer outlines as COCO polygons (OpenCV's contours, through the pixel
    centres of the boundary), those of at least 3 points."""
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def mix_segmentation_formats(json_file: Path) -> dict[str, int]:
    """Rewrite ``json_file``'s segmentations (compressed RLE, as the generator writes them) in
    turn as polygons, compressed RLE and uncompressed RLE; in every third image with objects, its
    first object becomes a crowd region (uncompressed RLE, ``iscrowd=1``, as COCO writes crowds).
    Returns how many annotations have each form."""
    coco = json.loads(json_file.read_text())
    counts = {"polygons": 0, "rle": 0, "uncompressed rle": 0, "crowd": 0}
    crowd_done: set = set()
    images_with_objects = sorted({a["image_id"] for a in coco["annotations"]})
    crowd_images = set(images_with_objects[::3])
    for k, ann in enumerate(coco["annotations"]):
        mask = mask_util.decode(ann["segmentation"])
        h, w = mask.shape
        uncompressed = uncompressed_rle(mask)
        if ann["image_id"] in crowd_images and ann["image_id"] not in crowd_done:
            crowd_done.add(ann["image_id"])
            ann.update(iscrowd=1, segmentation=uncompressed)
            counts["crowd"] += 1
        elif k % 3 == 0 and polygons_of(mask):
            ann["segmentation"] = polygons_of(mask)
            counts["polygons"] += 1
        elif k % 3 == 1:
            counts["rle"] += 1
        else:
            ann["segmentation"] = uncompressed
            counts["uncompressed rle"] += 1
    json_file.write_text(json.dumps(coco))
    return counts


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of an (H, W) binary mask: ``{"size": [H, W], "counts": runs}``,
    alternating runs of 0s and 1s in column-major order, starting with 0s."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]]))
    return {"size": list(mask.shape), "counts": ([0] if flat[0] else []) + runs.tolist()}
