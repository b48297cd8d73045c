"""A user's COCO-format dataset, checked and registered from a config (needs detectron2 when
called).

``configs/custom/*`` name the dataset by its files: ``names=L(coco_dataset)(json_file=...,
image_root=..., split="train")`` checks the files and registers them under a name derived from
their paths in whichever process builds the loader or evaluator (``--num-gpus`` workers, an
``--eval-only`` run, Detectron2's own ``tools/lazyconfig_train_net.py``), and
``num_classes=L(coco_num_classes)(json_file=...)`` takes the class count from the JSON.
"""

from __future__ import annotations

import hashlib
import logging
import os

from .._detectron2 import require_detectron2
from .coco_json import (
    CocoSummary,
    DatasetError,
    check_coco_dataset,
    clip_boxes,
    coco_categories,
)

__all__ = ["coco_dataset", "coco_num_classes", "load_checked_coco_json", "register_coco_dataset"]

logger = logging.getLogger(__name__)


def load_checked_coco_json(json_file: str, image_root: str, name: str) -> list[dict]:
    """Detectron2's ``load_coco_json`` (which also sets the class metadata of ``name``), then
    boxes partly outside their image clipped and zero-area boxes dropped, both counted in one log
    line. Images left without annotations are kept; ``filter_empty=True`` on the loader drops
    them."""
    from detectron2.data.datasets import load_coco_json

    records = load_coco_json(json_file, image_root, name)
    clipped, dropped = clip_boxes(records)
    empty = sum(1 for r in records if not r.get("annotations"))
    logger.info(
        f"Dataset '{name}': {len(records)} images; clipped {clipped} boxes partly outside their "
        f"image, dropped {dropped} boxes of zero area; {empty} images have no annotation"
    )
    return records


def register_coco_dataset(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    role: str = "dataset",
    check_images: str = "header",
    need_area: bool = False,
    need_masks: bool = False,
) -> CocoSummary:
    """Check the dataset (:func:`~dyhead_d2.data.coco_json.check_coco_dataset`) and register it
    as ``name`` with Detectron2's catalogs: ``thing_classes`` ordered by category id,
    ``thing_dataset_id_to_contiguous_id`` (as Detectron2 maps COCO's ids), ``json_file`` and
    ``image_root`` (which ``COCOEvaluator`` reads) and ``evaluator_type="coco"``. A name already
    registered is replaced, so the registration always describes the files as they are now."""
    require_detectron2("register_coco_dataset")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    json_file = os.path.abspath(os.fspath(json_file))
    image_root = os.path.abspath(os.fspath(image_root))
    summary = check_coco_dataset(
        json_file,
        image_root,
        role=role,
        check_images=check_images,
        need_area=need_area,
        need_masks=need_masks,
    )
    metadata = dict(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(summary.categories.names),
        thing_dataset_id_to_contiguous_id=summary.categories.id_to_contiguous,
    )
    if name in DatasetCatalog:
        registered = MetadataCatalog.get(name)
        if all(registered.get(k, None) == v for k, v in metadata.items()):
            return summary  # the same files and classes: keep it (loaders may hold it)
        DatasetCatalog.remove(name)
    if name in MetadataCatalog:
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, lambda: load_checked_coco_json(json_file, image_root, name))
    MetadataCatalog.get(name).set(**metadata)
    return summary


def _default_name(split: str, json_file: str, image_root: str) -> str:
    # Same files -> same name in every process; other files -> another name.
    key = f"{os.path.abspath(json_file)}\0{os.path.abspath(image_root)}"
    return f"custom_{split}_{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def coco_dataset(
    json_file: str,
    image_root: str,
    split: str = "train",
    name: str | None = None,
    check_images: str = "header",
    categories_of: str | None = None,
    need_masks: bool = False,
) -> str:
    """Check and register a COCO-format dataset; return its name. For LazyConfig files.

    Args:
        json_file, image_root: the annotations and the folder their ``file_name`` s are in.
        split: "train" or another label (e.g. "val"); splits other than "train" must give every
            annotation an ``area``, which COCO evaluation needs.
        name: the registered name; default ``custom_<split>_<digest of the two paths>``.
        check_images: "header" (default), "decode" or "none"; see
            :func:`~dyhead_d2.data.coco_json.check_coco_dataset`.
        categories_of: another COCO JSON (the training set's) whose categories this one's must
            equal, so that class ``i`` means the same in training and evaluation.
        need_masks: the config trains or evaluates masks: every non-crowd annotation needs a
            ``segmentation`` (in splits other than "train", every annotation: COCO's segm
            evaluation reads the crowd regions' too).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    name = name or _default_name(split, json_file, image_root)
    summary = register_coco_dataset(
        name,
        json_file,
        image_root,
        role=split,
        check_images=check_images,
        need_area=split != "train",
        need_masks=need_masks,
    )
    if categories_of:
        theirs = coco_categories(categories_of, "train")
        if theirs != summary.categories:
            ours = dict(zip(summary.categories.ids, summary.categories.names))
            other = dict(zip(theirs.ids, theirs.names))
            raise DatasetError(
                f"{split} JSON {json_file!r} has categories {ours} but {categories_of!r} has "
                f"{other}: both splits must list the same categories (id and name)"
            )
    return name


def coco_num_classes(json_file: str) -> int:
    """The number of categories in a COCO JSON: a model's ``num_classes`` from the data."""
    return len(coco_categories(json_file, "train"))
