"""Datasets: a synthetic COCO-format detection dataset that needs no download.

:mod:`.synthetic` needs only numpy and Pillow; :func:`register_synthetic` imports detectron2 when
called.
"""

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
    "build_synthetic_coco",
    "default_root",
    "register_synthetic",
    "render_synthetic_image",
    "synthetic_cache_dir",
    "synthetic_dataset",
]
