"""Datasets: a synthetic COCO-format dataset (boxes and masks) that needs no download, and a
user's own COCO-format dataset, checked before use.

:mod:`.synthetic` and :mod:`.coco_json` need only numpy, Pillow and pycocotools;
:func:`register_synthetic` and :func:`coco_dataset` import detectron2 when called.
"""

from .coco_json import DatasetError, check_coco_dataset, clip_boxes, coco_categories
from .custom import coco_dataset, coco_num_classes, register_coco_dataset
from .register import register_synthetic, synthetic_dataset
from .synthetic import (
    CATEGORY_NAMES,
    GENERATOR_VERSION,
    SyntheticImage,
    SyntheticObject,
    SyntheticSpec,
    build_synthetic_coco,
    default_root,
    render_synthetic_image,
    synthetic_cache_dir,
)

__all__ = [
    "CATEGORY_NAMES",
    "GENERATOR_VERSION",
    "SyntheticImage",
    "SyntheticObject",
    "SyntheticSpec",
    "DatasetError",
    "build_synthetic_coco",
    "check_coco_dataset",
    "clip_boxes",
    "coco_categories",
    "coco_dataset",
    "coco_num_classes",
    "default_root",
    "register_coco_dataset",
    "register_synthetic",
    "render_synthetic_image",
    "synthetic_cache_dir",
    "synthetic_dataset",
]
