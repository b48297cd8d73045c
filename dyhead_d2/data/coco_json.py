"""Checking a user's COCO-format detection dataset before any work is done (no detectron2).

:func:`check_coco_dataset` reads the JSON once and refuses, in one line naming the file, the
position, the key, the annotation id or the image file, everything that would otherwise fail
late: inside a data-loader worker, after hours of training in the evaluator, or not at all (an
annotation of an unknown image is silently ignored by pycocotools). :func:`clip_boxes` is the
one place where boxes partly outside their image are clipped and empty ones dropped, with counts.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from PIL import Image

__all__ = [
    "CocoCategories",
    "DatasetError",
    "check_coco_dataset",
    "clip_boxes",
    "coco_categories",
    "read_coco_json",
]

# How a check of the image files goes: "header" opens each file and reads its header (catches
# missing, empty, truncated-header and non-image files; 0.03 ms per cached 128 px JPEG here);
# "decode" decodes every image (catches corrupt pixel data too, at the cost of a full pass over
# the data: 0.2 ms per 128 px JPEG here, far more for large images); "none" skips.
IMAGE_CHECKS = ("header", "decode", "none")


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file, key or id at fault."""


@dataclass(frozen=True)
class CocoCategories:
    """A dataset's categories sorted by id, as Detectron2 maps COCO's: contiguous class ``i`` is
    the ``i``-th smallest category id."""

    ids: tuple[int, ...]
    names: tuple[str, ...]

    @property
    def id_to_contiguous(self) -> dict[int, int]:
        return {cat_id: i for i, cat_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class CocoSummary:
    """What :func:`check_coco_dataset` found: the categories and a few counts."""

    categories: CocoCategories
    num_images: int
    num_annotations: int
    num_empty_images: int


def _first(items: list[str]) -> str:
    """``items[0]``, plus how many more there are: an error stays one line however many."""
    more = f" (and {len(items) - 1} more like it)" if len(items) > 1 else ""
    return items[0] + more


def read_coco_json(json_file: str | os.PathLike, role: str = "annotations") -> dict[str, Any]:
    """Parse ``json_file``; :class:`DatasetError` naming the file (and the position of a syntax
    error) if it is absent or not JSON. ``role`` says which file it is, for the message."""
    path = os.fspath(json_file)
    if not os.path.isfile(path):
        what = "is a folder, not a file" if os.path.isdir(path) else "does not exist"
        raise DatasetError(f"{role} JSON {path!r} {what}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(
            f"{role} JSON {path!r} is not valid JSON: {e.msg} at line {e.lineno}, column "
            f"{e.colno} (character {e.pos})"
        ) from e
    except (UnicodeDecodeError, OSError) as e:
        raise DatasetError(f"cannot read {role} JSON {path!r}: {e}") from e
    if not isinstance(data, dict):
        raise DatasetError(
            f"{role} JSON {path!r}: expected an object with 'images', 'annotations' and "
            f"'categories', got a {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            problem = "has no" if key not in data else "has a non-list"
            raise DatasetError(f"{role} JSON {path!r} {problem} '{key}' list (COCO format)")
    return data


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _categories(data: dict, where: str) -> CocoCategories:
    cats = {}
    for i, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or "name" not in cat:
            raise DatasetError(
                f"{where}: categories[{i}] needs an integer 'id' and a 'name', got {cat!r}"
            )
        if cat["id"] in cats:
            raise DatasetError(f"{where}: category id {cat['id']} appears twice in 'categories'")
        cats[cat["id"]] = str(cat["name"])
    if not cats:
        raise DatasetError(f"{where}: 'categories' is empty; a detector needs at least one class")
    ids = tuple(sorted(cats))
    return CocoCategories(ids, tuple(cats[i] for i in ids))


def _check_images(data: dict, where: str) -> dict[Any, dict]:
    images: dict[Any, dict] = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict):
            raise DatasetError(f"{where}: images[{i}] is not an object")
        missing = [k for k in ("id", "file_name", "height", "width") if k not in img]
        if missing:
            raise DatasetError(f"{where}: images[{i}] (id {img.get('id')!r}) has no {missing}")
        if img["id"] in images:
            raise DatasetError(f"{where}: image id {img['id']!r} appears twice in 'images'")
        if (
            not (_is_int(img["height"]) and _is_int(img["width"]))
            or min(img["height"], img["width"]) < 1
        ):
            raise DatasetError(
                f"{where}: image id {img['id']!r} has height {img['height']!r} and width "
                f"{img['width']!r}; both must be positive integers"
            )
        images[img["id"]] = img
    return images


def _segmentation_problem(segm: Any, image: dict) -> str | None:
    """Why ``segm`` is not a usable COCO segmentation of ``image``, or None.

    Polygons: a list of ``[x1, y1, x2, y2, ...]`` lists of at least 3 points (Detectron2's loader
    silently drops shorter or odd-length ones, and the whole annotation, box included, when none
    is left). RLE: ``{"size": [height, width], "counts": str or list of run lengths}`` of the
    image's size (a mask of another size does not fit the image it is pasted on).
    """
    if isinstance(segm, dict):
        size, counts = segm.get("size"), segm.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(map(_is_int, size))):
            return f"RLE 'size' must be [height, width], got {size!r}"
        if size != [image["height"], image["width"]]:
            return (
                f"RLE size {size} is not its image's [height, width] "
                f"[{image['height']}, {image['width']}] (image id {image['id']!r})"
            )
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts):
                return "uncompressed RLE 'counts' must be non-negative integers"
            pixels = size[0] * size[1]
            if sum(counts) != pixels:
                return f"RLE counts cover {sum(counts)} pixels, not height * width = {pixels}"
        elif not isinstance(counts, str):
            kind = type(counts).__name__
            return f"RLE 'counts' must be a string or a list of run lengths, got {kind}"
        return None
    if not isinstance(segm, list) or not all(isinstance(poly, list) for poly in segm):
        return (
            "'segmentation' must be polygons [[x1, y1, x2, y2, ...], ...] or an RLE "
            "{'size': [height, width], 'counts': ...}"
        )
    for k, poly in enumerate(segm):
        if not all(map(_is_number, poly)):
            return f"polygon {k} has a coordinate that is not a finite number"
        if len(poly) % 2:
            return f"polygon {k} has an odd number of coordinates ({len(poly)})"
        if len(poly) < 6:
            return f"polygon {k} has {len(poly) // 2} points; a polygon needs at least 3"
    return None


def _check_annotations(
    data: dict,
    images: dict,
    categories: CocoCategories,
    where: str,
    need_area: bool,
    need_masks: bool = False,
) -> None:
    seen: set = set()
    problems: dict[str, list[str]] = {}

    def bad(kind: str, text: str) -> None:
        problems.setdefault(kind, []).append(text)

    known = set(categories.ids)
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or "id" not in ann:
            bad("no id", f"annotations[{i}] has no 'id' (pycocotools needs one per annotation)")
            continue
        aid = ann["id"]
        if aid in seen:
            bad("dup", f"annotation id {aid!r} appears twice")
        seen.add(aid)
        if ann.get("image_id") not in images:
            bad("image", f"annotation id {aid!r}: image_id {ann.get('image_id')!r} has no image")
        if ann.get("category_id") not in known:
            bad(
                "category",
                f"annotation id {aid!r}: category_id {ann.get('category_id')!r} is not in "
                f"'categories' (ids {list(categories.ids)})",
            )
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
            bad("bbox", f"annotation id {aid!r}: 'bbox' must be [x, y, width, height], got {box!r}")
        if need_area and not _is_number(ann.get("area")):
            bad(
                "area",
                f"annotation id {aid!r} has no numeric 'area', which COCO evaluation needs "
                "(the box's width * height will do)",
            )
        segm = ann.get("segmentation")
        if segm:  # an empty list is no segmentation, as in Detectron2's loader
            image = images.get(ann.get("image_id"))
            why = _segmentation_problem(segm, image) if image is not None else None
            if why is not None:
                bad("segmentation", f"annotation id {aid!r}: {why}")
        elif need_masks and (need_area or not ann.get("iscrowd", 0)):
            # Training reads the masks of non-crowd annotations; COCO's segm evaluation reads
            # every ground-truth region's (need_area: an evaluated split).
            crowd = "crowd " if ann.get("iscrowd", 0) else ""
            bad(
                "no segmentation",
                f"{crowd}annotation id {aid!r} has no 'segmentation' (polygons or RLE), which a "
                "mask config needs",
            )
    kinds = ("no id", "dup", "image", "category", "bbox", "area", "segmentation")
    for kind in (*kinds, "no segmentation"):
        if kind in problems:
            raise DatasetError(f"{where}: {_first(problems[kind])}")


def _check_image_file(path: str, image: dict, mode: str) -> str | None:
    """None if the file is usable, else why not."""
    if not os.path.isfile(path):
        return "does not exist"
    try:
        with Image.open(path) as im:
            size = im.size
            if mode == "decode":
                im.load()
    except Exception as e:  # PIL raises many types for bad files; all mean "unreadable"
        return f"cannot be read as an image ({type(e).__name__}: {e})"
    # EXIF orientation may swap the sides, which Detectron2 applies when it reads the image.
    if (image["width"], image["height"]) not in (size, size[::-1]):
        return f"is {size[0]}x{size[1]} pixels but 'images' says {image['width']}x{image['height']}"
    return None


def _check_image_files(images: Iterable[dict], image_root: str, role: str, mode: str) -> None:
    problems = []
    for img in images:
        path = os.path.join(image_root, img["file_name"])
        why = _check_image_file(path, img, mode)
        if why is not None:
            problems.append(f"image file {path!r} (image id {img['id']!r}) {why}")
    if problems:
        raise DatasetError(f"{role} images: {_first(problems)}")


@lru_cache(maxsize=16)
def _check_cached(
    json_file: str,
    stamp: tuple,
    image_root: str,
    role: str,
    check_images: str,
    need_area: bool,
    need_masks: bool,
) -> CocoSummary:
    data = read_coco_json(json_file, role)
    where = f"{role} JSON {json_file!r}"
    categories = _categories(data, where)
    images = _check_images(data, where)
    _check_annotations(data, images, categories, where, need_area, need_masks)
    if check_images != "none":
        _check_image_files(images.values(), image_root, role, check_images)
    annotated = {ann["image_id"] for ann in data["annotations"]}
    return CocoSummary(
        categories, len(images), len(data["annotations"]), len(set(images) - annotated)
    )


def check_coco_dataset(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    role: str = "dataset",
    check_images: str = "header",
    need_area: bool = False,
    need_masks: bool = False,
) -> CocoSummary:
    """Check a COCO-format detection dataset; raise :class:`DatasetError` at the first problem.

    Checks, in order: the JSON file and the image folder exist; the JSON parses (a syntax error
    names line, column and character); it has ``images``, ``annotations`` and ``categories``;
    category and image ids are unique and images have a size; every annotation has a unique
    ``id``, an ``image_id`` of a listed image, a ``category_id`` of a listed category and a
    4-number ``bbox`` (and an ``area``, with ``need_area``, which COCO evaluation needs); a
    ``segmentation``, where there is one, is polygons of at least 3 points (an even number of
    coordinates) or an RLE of its image's size; with ``need_masks`` (a mask config) every
    non-crowd annotation has one, and with ``need_area`` too every crowd annotation; every
    image file exists, is readable (see ``check_images``: "header", "decode" or "none") and has
    the size the JSON gives. The result is cached per process while the JSON file is unchanged.
    """
    if check_images not in IMAGE_CHECKS:
        raise ValueError(f"check_images must be one of {IMAGE_CHECKS}, got {check_images!r}")
    json_file = os.path.abspath(os.fspath(json_file))
    image_root = os.path.abspath(os.fspath(image_root))
    if not os.path.isfile(json_file):
        read_coco_json(json_file, role)  # raises, naming the path
    if not os.path.isdir(image_root):
        what = "is a file, not a folder" if os.path.exists(image_root) else "does not exist"
        raise DatasetError(f"{role} image folder {image_root!r} {what}")
    st = os.stat(json_file)
    return _check_cached(
        json_file,
        (st.st_mtime_ns, st.st_size),
        image_root,
        role,
        check_images,
        need_area,
        need_masks,
    )


@lru_cache(maxsize=16)
def _categories_cached(json_file: str, stamp: tuple, role: str) -> CocoCategories:
    return _categories(read_coco_json(json_file, role), f"{role} JSON {json_file!r}")


def coco_categories(json_file: str | os.PathLike, role: str = "train") -> CocoCategories:
    """The categories of a COCO JSON, checked (unique integer ids, names, at least one); cached
    per process while the file is unchanged."""
    json_file = os.path.abspath(os.fspath(json_file))
    if not os.path.isfile(json_file):
        read_coco_json(json_file, role)  # raises, naming the path
    st = os.stat(json_file)
    return _categories_cached(json_file, (st.st_mtime_ns, st.st_size), role)


def clip_boxes(records: list[dict]) -> tuple[int, int]:
    """Clip each annotation's XYWH ``bbox`` to its record's image, in place, and drop those left
    with zero area. Returns ``(clipped, dropped)``: boxes changed by clipping (and kept), boxes
    removed. Records keep their place even when no annotation is left."""
    clipped = dropped = 0
    for record in records:
        h, w = record["height"], record["width"]
        kept = []
        for ann in record.get("annotations", []):
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x0, y0 = min(max(x, 0.0), w), min(max(y, 0.0), h)
            x1, y1 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
            if x1 - x0 <= 0 or y1 - y0 <= 0:
                dropped += 1
                continue
            box = [x0, y0, x1 - x0, y1 - y0]
            if box != [x, y, bw, bh]:
                clipped += 1
                ann["bbox"] = box
            kept.append(ann)
        if "annotations" in record:
            record["annotations"] = kept
    return clipped, dropped
