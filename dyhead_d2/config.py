"""The config layer: loading LazyConfig files and ``key=value`` overrides, and resolving what a
config points to (device, dataset names, checkpoint), with errors a user can act on.

Training, inference, export, analysis and the tools all read configs through here; it imports no
trainer piece (``detectron2.engine``, :mod:`dyhead_d2.engine`).
"""

from __future__ import annotations

import difflib
import os

from ._detectron2 import require_detectron2

require_detectron2("dyhead_d2.config")

import torch  # noqa: E402
from detectron2.config import LazyConfig, instantiate  # noqa: E402
from detectron2.utils.file_io import PathManager  # noqa: E402
from omegaconf import DictConfig, ListConfig, OmegaConf  # noqa: E402
from omegaconf.errors import MissingMandatoryValue  # noqa: E402

from .data.coco_json import DatasetError  # noqa: E402

__all__ = ["ConfigError", "check_checkpoint", "dataset_names", "load_config", "resolve_device"]

_ABSENT = object()


class ConfigError(ValueError):
    """A mistake in a config file, an override or what they point to; the message says which."""


def _all_keys(node, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, DictConfig):
        items = ((str(k), node._get_node(k)) for k in node.keys())
    elif isinstance(node, ListConfig):
        items = ((str(i), node._get_node(i)) for i in range(len(node)))
    else:
        return keys
    for k, child in items:
        full = f"{prefix}.{k}" if prefix else k
        keys.append(full)
        if isinstance(child, (DictConfig, ListConfig)):
            keys.extend(_all_keys(child, full))
    return keys


def _missing_keys(node, prefix: str = "") -> list[str]:
    """Keys whose value is ``???``, without resolving interpolations (``OmegaConf.missing_keys``
    raises on an interpolation that points at a ``???`` value instead of naming the key)."""
    if isinstance(node, DictConfig):
        items = ((str(k), node._get_node(k)) for k in node.keys())
    elif isinstance(node, ListConfig):
        items = ((str(i), node._get_node(i)) for i in range(len(node)))
    else:
        return []
    out = []
    for k, child in items:
        full = f"{prefix}.{k}" if prefix else k
        if child._is_missing():
            out.append(full)
        elif isinstance(child, (DictConfig, ListConfig)):
            out.extend(_missing_keys(child, full))
    return out


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` exists, whether or not it has a value yet (``???``)."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True) is not _ABSENT
    except MissingMandatoryValue:
        return True


def _override_key(override: str) -> tuple[str, bool]:
    """``(key, adds_new_key)`` of one hydra-style override such as ``a.b=1`` or ``+a.c=2``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        (parsed,) = OverridesParser.create().parse_overrides([override])
    except Exception as e:  # hydra raises its own OverrideParseException
        raise ConfigError(f"cannot parse override {override!r}: {e}") from e
    return parsed.key_or_group, parsed.is_add()


def load_config(config_file: str, overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Load a LazyConfig file and apply ``key=value`` overrides.

    Unlike ``LazyConfig.apply_overrides`` alone, an override of a key the config does not have is
    an error (with the closest existing keys as suggestions) instead of silently adding a key a
    typo made up; prefix the key with ``+`` to add one on purpose. Values a config leaves as
    ``???`` must be set by then.
    """
    if not os.path.isfile(config_file):
        raise ConfigError(f"config file {config_file!r} does not exist")
    try:
        cfg = LazyConfig.load(config_file)
    except Exception as e:
        raise ConfigError(
            f"cannot load config file {config_file!r}: {type(e).__name__}: {e}"
        ) from e
    known = None
    for override in overrides:
        if override.startswith("-"):
            # argparse hands everything after the first override to the overrides.
            raise ConfigError(f"{override!r} is a flag: put flags before the key=value overrides")
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not of the form key=value")
        key, adds = _override_key(override)
        if not adds and not _has_key(cfg, key):
            known = known if known is not None else _all_keys(cfg)
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(
                f"override {override!r}: {config_file} has no key {key!r}{hint} "
                f"(write +{key}=... to add a new key)"
            )
    try:
        LazyConfig.apply_overrides(cfg, list(overrides))
    except Exception as e:
        raise ConfigError(f"cannot apply overrides {list(overrides)}: {e}") from e
    missing = sorted(_missing_keys(cfg))
    if missing:
        raise ConfigError(
            f"{config_file} leaves these keys unset ('???'); set them in the config or with "
            f"key=value overrides: {', '.join(missing)}"
        )
    return cfg


def resolve_device(device: str | None) -> str:
    """``"auto"`` (or empty) -> "cuda" when a GPU is visible, else "cpu"; anything else as is."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"train.device={device!r} but no CUDA device is available; use train.device=auto or cpu"
        )
    return str(device)


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
