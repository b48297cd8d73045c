"""Checks run before training starts, so a wrong dataset or checkpoint fails in one clear line
instead of deep inside a data-loader worker or after the model is built."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.file_io import PathManager
from omegaconf import DictConfig, ListConfig, OmegaConf

from ..data.coco_json import DatasetError
from .config import ConfigError

__all__ = ["check_checkpoint", "check_datasets", "dataset_names"]

logger = logging.getLogger(__name__)


def dataset_names(names) -> list[str]:
    """The dataset names a config's ``dataset.names`` denotes (a string, a list, or a LazyCall
    that registers a dataset and returns its name)."""
    if isinstance(names, DictConfig) and "_target_" in names:
        try:
            names = instantiate(names)
        except DatasetError as e:  # already names the file, key or id at fault
            raise ConfigError(str(e)) from e
        except Exception as e:
            raise ConfigError(
                f"cannot get dataset names from {OmegaConf.to_yaml(names).strip()!r}: "
                f"{type(e).__name__}: {e}"
            ) from e
    if isinstance(names, ListConfig):
        names = OmegaConf.to_object(names)
    if isinstance(names, str):
        return [names]
    return [n for item in names for n in dataset_names(item)]


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


def check_checkpoint(path: str) -> str:
    """Make sure ``path`` can be loaded: a local file, or a URL Detectron2 can fetch (fetched
    now, into its cache, so the workers find it there). Returns the local path; "" for none."""
    if not path:
        return ""
    if os.path.isfile(path):
        return path
    if "://" not in path:
        raise ConfigError(f"checkpoint {path!r} does not exist (train.init_checkpoint)")
    try:
        local = PathManager.get_local_path(path)
    except Exception as e:
        raise ConfigError(
            f"cannot fetch checkpoint {path!r} (train.init_checkpoint): {type(e).__name__}: {e}"
        ) from e
    if not os.path.isfile(local):
        raise ConfigError(f"checkpoint {path!r} resolved to {local!r}, which is not a file")
    return local
