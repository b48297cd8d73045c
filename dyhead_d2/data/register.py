"""Register the synthetic shapes dataset with Detectron2's catalogs."""

from __future__ import annotations

import logging
import os
from typing import Any

from .._detectron2 import require_detectron2
from .synthetic import CATEGORY_NAMES, build_synthetic_coco

__all__ = ["register_synthetic", "synthetic_dataset"]

logger = logging.getLogger(__name__)


def register_synthetic(
    name_prefix: str = "synthetic",
    root: str | os.PathLike | None = None,
    *,
    num_train: int = 3000,
    num_val: int = 300,
    seed: int = 0,
    **generator_kwargs: Any,
) -> tuple[str, str]:
    """Build (if not cached) and register ``{name_prefix}_train`` and ``{name_prefix}_val``.

    Both splits are COCO instances datasets with ``thing_classes`` = :data:`CATEGORY_NAMES` and
    ``evaluator_type="coco"``. The default sizes are meant for short CPU runs: enough training
    images that a run of minutes sees each only a few times, a val split with about 1,200 objects
    for a stable AP, and both generated in well under a minute on two cores.

    ``root`` defaults to ``$DETECTRON2_DATASETS`` or ``./datasets``; ``generator_kwargs`` go to
    :func:`~dyhead_d2.data.build_synthetic_coco` (``image_size``, ``num_workers``, ...). Calling
    again with the same arguments is a no-op; a name already registered with anything else is an
    error rather than being silently reused.

    Returns the two dataset names.
    """
    require_detectron2("register_synthetic")
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances

    names = []
    for split, num_images in (("train", num_train), ("val", num_val)):
        name = f"{name_prefix}_{split}"
        image_dir, json_file = build_synthetic_coco(
            root, split, num_images, seed=seed, **generator_kwargs
        )
        expected = {
            "json_file": str(json_file),
            "image_root": str(image_dir),
            "evaluator_type": "coco",
            "thing_classes": list(CATEGORY_NAMES),
        }
        registered = name in DatasetCatalog
        if registered or name in MetadataCatalog:
            meta = MetadataCatalog.get(name)
            # A dataset registered elsewhere must match fully; metadata set ahead of registration
            # only where it is present.
            conflicts = {
                key: meta.get(key)
                for key, value in expected.items()
                if (registered or hasattr(meta, key)) and meta.get(key) != value
            }
            if conflicts:
                raise ValueError(
                    f"Dataset '{name}' is already registered with different metadata: "
                    f"{conflicts}, expected {expected}. Pick another name_prefix or remove it "
                    "from DatasetCatalog and MetadataCatalog first."
                )
            if registered:
                logger.info(f"Dataset '{name}' already registered with the same data")
                names.append(name)
                continue
        register_coco_instances(
            name, {"thing_classes": list(CATEGORY_NAMES)}, str(json_file), str(image_dir)
        )
        logger.info(f"Registered dataset '{name}' ({num_images} images, {json_file})")
        names.append(name)
    return names[0], names[1]


def synthetic_dataset(split: str, name_prefix: str = "synthetic", **kwargs: Any) -> str:
    """Register the synthetic splits (see :func:`register_synthetic`) and return ``split``'s name.

    Meant for LazyConfig files: ``names=L(synthetic_dataset)(split="train")`` registers the data
    in whichever process builds the data loader or evaluator, including launched workers.
    """
    if split not in ("train", "val"):
        raise ValueError(f"synthetic_dataset: split must be 'train' or 'val', got {split!r}")
    train, val = register_synthetic(name_prefix, **kwargs)
    return train if split == "train" else val
