"""Running a LazyConfig model on single images.

:class:`Predictor` is what Detectron2's ``DefaultPredictor`` is to yacs configs, for LazyConfig
files: it builds ``cfg.model``, loads its weights, reads the input format, test augmentations and
dataset metadata from ``cfg.dataloader.test`` and runs one image at a time. ``tools/demo.py`` and
``tools/visualize_attention.py`` are thin command lines over this package.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import Instances
from omegaconf import DictConfig, OmegaConf

from ..checkpoint.checkpointer import DyHeadCheckpointer
from ..config import ConfigError, check_checkpoint, dataset_names, load_config, resolve_device
from ..layers.finite import describe_non_finite
from .inputs import InputError, read_image

__all__ = ["Predictor"]


def _select(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


class Predictor:
    """Builds a config's model with its weights and runs it on one image at a time.

    * the model is ``instantiate(cfg.model)`` in eval mode on ``device`` (default
      ``cfg.train.device``, where "auto" is CUDA when available, else CPU);
    * the weights are ``weights`` (default ``cfg.train.init_checkpoint``), loaded with
      :class:`~dyhead_d2.checkpoint.DyHeadCheckpointer`, so released checkpoints work too. They
      must fill the whole model: a checkpoint missing some of its parameters (or with other
      shapes) is a :class:`~dyhead_d2.config.ConfigError`, not a half-random model;
    * images are resized by ``cfg.dataloader.test.mapper.augmentations`` and are expected in
      ``cfg.dataloader.test.mapper.image_format`` (:attr:`input_format`; the model's
      ``input_format``, else "BGR", for a config without a test loader);
    * :attr:`metadata` is that of the first dataset of ``cfg.dataloader.test.dataset.names``
      (resolved as :func:`~dyhead_d2.config.dataset_names` does, which registers a
      dataset a LazyCall names), or empty metadata for a config without one.

    Calling it with an image path or an (H, W, 3) uint8 array in BGR order (as OpenCV reads it;
    flipped to RGB for an RGB model, like Detectron2's ``DefaultPredictor``) returns the model's
    :class:`Instances` for the image, in the image's own pixels (the model scales its boxes back
    from the resized image), on the CPU.

    Args:
        cfg: a LazyConfig file or a loaded config.
        weights: checkpoint to load (default ``cfg.train.init_checkpoint``).
        device: where to run (default ``cfg.train.device``).
        overrides: config values to set, by dotted key (``**{"model.test_score_thresh": 0.3}``)
            or with ``__`` for the dots (``model__test_score_thresh=0.3``).
    """

    def __init__(
        self,
        cfg: DictConfig | str | os.PathLike,
        weights: str | None = None,
        device: str | None = None,
        **overrides,
    ):
        cfg = _with_overrides(cfg, overrides)
        if weights is None:
            weights = _select(cfg, "train.init_checkpoint", default="")
        if not weights:
            raise ConfigError(
                "no weights to run: set train.init_checkpoint=PATH (a checkpoint of this config)"
            )
        check_checkpoint(weights)
        self.device = resolve_device(device or _select(cfg, "train.device", default="auto"))

        names = _select(cfg, "dataloader.test.dataset.names")
        self.dataset_name = dataset_names(names)[0] if names is not None else None
        self.metadata = MetadataCatalog.get(self.dataset_name or "__unused")

        self.model = instantiate(cfg.model)
        self.model.to(self.device).eval()
        self.weights = weights
        _load_all_weights(self.model, weights)

        augmentations = _select(cfg, "dataloader.test.mapper.augmentations", default=[])
        self.augmentations = T.AugmentationList(list(instantiate(augmentations)))
        default_format = getattr(self.model, "input_format", "BGR")
        self.input_format = _select(cfg, "dataloader.test.mapper.image_format") or default_format
        if self.input_format not in ("BGR", "RGB"):
            raise ConfigError(
                f"image format {self.input_format!r} is not supported; use 'BGR' or 'RGB'"
            )

    def prepare(self, image: np.ndarray) -> dict:
        """The model's input dict for an (H, W, 3) uint8 image in :attr:`input_format`:
        ``image`` (3, h, w) after the test augmentations, plus the original ``height``/``width``
        (what Detectron2's ``DatasetMapper`` produces at test time)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
        if np.issubdtype(image.dtype, np.floating) and not np.isfinite(image).all():
            raise InputError(
                f"the image ({image.shape}, {image.dtype}) holds {describe_non_finite(image)}; "
                "the model needs finite pixel values"
            )
        height, width = image.shape[:2]
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width}

    @torch.no_grad()
    def __call__(self, image: np.ndarray | str | os.PathLike) -> Instances:
        if isinstance(image, (str, os.PathLike)):
            image = read_image(os.fspath(image), self.input_format)
        elif self.input_format == "RGB":
            image = np.asarray(image)[:, :, ::-1]
        return self.model([self.prepare(image)])[0]["instances"].to("cpu")


def _with_overrides(cfg: DictConfig | str | os.PathLike, overrides: Mapping) -> DictConfig:
    """``cfg`` (a file is loaded) with ``overrides`` (dotted or ``__``-separated keys) set."""
    items = [f"{k.replace('__', '.')}={json.dumps(v)}" for k, v in overrides.items()]
    if not isinstance(cfg, DictConfig):
        return load_config(os.fspath(cfg), items)
    if items:
        cfg = copy.deepcopy(cfg)
        try:
            LazyConfig.apply_overrides(cfg, items)
        except Exception as e:
            raise ConfigError(f"cannot apply overrides {items}: {e}") from e
    return cfg


class _RecordingCheckpointer(DyHeadCheckpointer):
    """Keeps what loading left unmatched instead of only logging it."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def _load_all_weights(model: torch.nn.Module, weights: str) -> None:
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(weights)
    bad = checkpointer.incompatible
    if bad is None:
        return
    problems = list(bad.missing_keys) + [k for k, *_ in bad.incorrect_shapes]
    if problems:
        shown = ", ".join(problems[:3]) + (", ..." if len(problems) > 3 else "")
        raise ConfigError(
            f"checkpoint {weights!r} does not fit this config's model: {len(problems)} of its "
            f"parameters are missing from it or have other shapes ({shown}); is it a checkpoint "
            "of this config (same overrides)?"
        )
