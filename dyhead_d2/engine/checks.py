"""Checks run before training starts, so a wrong dataset fails in one clear line instead of deep
inside a data-loader worker or after the model is built (the checkpoint's check,
:func:`dyhead_d2.config.check_checkpoint`, serves inference too)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager

from ..config import ConfigError

__all__ = ["check_datasets"]

logger = logging.getLogger(__name__)


def check_datasets(names: Iterable[str]) -> None:
    """Every name is registered, and the files its metadata names exist."""
    for name in names:
        if name not in DatasetCatalog:
            raise ConfigError(
                f"dataset {name!r} is not registered with Detectron2's DatasetCatalog. Register "
                "it (e.g. detectron2.data.datasets.register_coco_instances) before training, or "
                "fix the name in dataloader.*.dataset.names"
            )
        meta = MetadataCatalog.get(name)
        for key in ("json_file", "image_root"):
            path = meta.get(key, None)
            if path and not PathManager.exists(path):
                raise ConfigError(
                    f"dataset {name!r} is registered but its {key} {path!r} does not exist. "
                    "Detectron2's builtin datasets live under $DETECTRON2_DATASETS "
                    f"(now {os.environ.get('DETECTRON2_DATASETS', './datasets')!r}); see "
                    "detectron2's datasets/README.md for the expected layout"
                )
