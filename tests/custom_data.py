"""Small COCO-format datasets unlike the quickstart's, written the way a user would have them.

Images come from the synthetic generator; the JSON keeps a subset of its classes under
non-contiguous ids (the other shapes stay in the pictures, unlabelled: things not to detect) and
has images without any annotation.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
