"""Running a LazyConfig model on single images, and writing its detections in COCO's format.

:class:`Predictor` is what Detectron2's ``DefaultPredictor`` is to yacs configs, for LazyConfig
files: it builds ``cfg.model``, loads its weights, reads the input format, test augmentations and
dataset metadata from ``cfg.dataloader.test`` and runs one image at a time. ``tools/demo.py`` and
``tools/visualize_attention.py`` are thin command lines over this module.
"""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Instances
from omegaconf import DictConfig, OmegaConf
from PIL import Image, UnidentifiedImageError

from ..checkpoint.checkpointer import DyHeadCheckpointer
from ..layers.finite import describe_non_finite
from .checks import check_checkpoint, dataset_names
from .config import ConfigError, load_config, resolve_device

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetIds",
    "InputError",
    "Predictor",
    "coco_results",
    "find_images",
    "read_image",
    "write_coco_results",
]

logger = logging.getLogger(__name__)

# What a folder or a glob is searched for (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class InputError(ValueError):
    """An input image that cannot be found or read; the message names it."""


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def find_images(inputs: Iterable[str]) -> list[str]:
    """The image files that ``inputs`` name, in order and without repeats.

    Each input is a file (taken as is, whatever its extension), a folder (its files with an
    image extension, sorted; not recursive) or a glob pattern (``**`` recurses; matches without
    an image extension are ignored). An input that yields no image is an :class:`InputError`.
    """
    found: dict[str, None] = {}
    for item in inputs:
        if os.path.isfile(item):
            matches = [item]
        elif os.path.isdir(item):
            names = sorted(os.listdir(item))
            matches = [os.path.join(item, n) for n in names if _is_image_name(n)]
            matches = [m for m in matches if os.path.isfile(m)]
            if not matches:
                raise InputError(
                    f"folder {item!r} has no image files ({', '.join(IMAGE_EXTENSIONS)})"
                )
        else:
            matches = sorted(glob.glob(item, recursive=True))
            matches = [m for m in matches if os.path.isfile(m) and _is_image_name(m)]
            if not matches:
                what = "glob pattern" if glob.has_magic(item) else "input"
                raise InputError(f"{what} {item!r} matches no image file")
        for m in matches:
            found.setdefault(m, None)
    if not found:
        raise InputError("no input images given")
    return list(found)


def read_image(path: str, format: str = "BGR") -> np.ndarray:
    """An (H, W, 3) uint8 array in ``format`` ("BGR" or "RGB"), EXIF orientation applied, as
    Detectron2's data loader reads it. Raises :class:`InputError` when it cannot."""
    try:
        return detection_utils.read_image(path, format=format)
    except UnidentifiedImageError as e:
        raise InputError(f"cannot read image {path!r}: not an image file Pillow can decode") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InputError(f"cannot read image {path!r}: {reason}") from e


def _select(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


class Predictor:
    """Builds a config's model with its weights and runs it on one image at a time.

    * the model is ``instantiate(cfg.model)`` in eval mode on ``device`` (default
      ``cfg.train.device``, where "auto" is CUDA when available, else CPU);
    * the weights are ``weights`` (default ``cfg.train.init_checkpoint``), loaded with
      :class:`~dyhead_d2.checkpoint.DyHeadCheckpointer`, so released checkpoints work too. They
      must fill the whole model: a checkpoint missing some of its parameters (or with other
      shapes) is a :class:`~dyhead_d2.engine.ConfigError`, not a half-random model;
    * images are resized by ``cfg.dataloader.test.mapper.augmentations`` and are expected in
      ``cfg.dataloader.test.mapper.image_format`` (:attr:`input_format`; the model's
      ``input_format``, else "BGR", for a config without a test loader);
    * :attr:`metadata` is that of the first dataset of ``cfg.dataloader.test.dataset.names``
      (resolved as :func:`~dyhead_d2.engine.checks.dataset_names` does, which registers a
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


class DatasetIds:
    """The ids a COCO results file uses: the dataset's category id of each contiguous class and
    the dataset's image id of each of its image files.

    Built from a registered dataset: the category mapping is its metadata's
    ``thing_dataset_id_to_contiguous_id`` (which Detectron2 sets when it loads a COCO-format
    dataset, so the dataset is loaded first when it can be); image ids come from its records,
    matched by the real path of the image file. Without a dataset, or where it cannot be
    loaded (files not there), classes keep their contiguous ids and images are named by file.
    """

    def __init__(
        self,
        category_ids: Mapping[int, int] | None = None,
        image_ids: Mapping[str, int | str] | None = None,
    ):
        self.category_ids = dict(category_ids) if category_ids else None
        self.image_ids = dict(image_ids or {})

    @classmethod
    def from_dataset(cls, name: str | None) -> DatasetIds:
        if name is None:
            return cls()
        image_ids = {}
        json_file = MetadataCatalog.get(name).get("json_file", None)
        # A COCO-format dataset whose files are not there (e.g. COCO itself, not downloaded)
        # only has its metadata to offer.
        if name in DatasetCatalog and (json_file is None or os.path.isfile(json_file)):
            try:
                records = DatasetCatalog.get(name)
            except Exception as e:  # any loader a user registered; the ids are a nicety
                logger.warning(f"cannot load dataset {name!r} for its image ids: {e}")
                records = []
            image_ids = {
                os.path.realpath(r["file_name"]): r["image_id"]
                for r in records
                if "file_name" in r and "image_id" in r
            }
        mapping = MetadataCatalog.get(name).get("thing_dataset_id_to_contiguous_id", None)
        category_ids = {int(v): int(k) for k, v in mapping.items()} if mapping else None
        return cls(category_ids, image_ids)

    def image_id(self, path: str) -> int | str:
        """The dataset's id of the image at ``path``, else its file name."""
        return self.image_ids.get(os.path.realpath(path), os.path.basename(path))

    def category_id(self, contiguous: int) -> int:
        if self.category_ids is None:
            return int(contiguous)
        return self.category_ids[int(contiguous)]


def coco_results(
    instances: Instances, image_id: int | str, ids: DatasetIds | None = None
) -> list[dict]:
    """Detections as COCO results: ``image_id``, ``category_id`` (the dataset's, see
    :class:`DatasetIds`), ``bbox`` [x, y, width, height] in the instances' pixels, ``score``;
    in the instances' order (highest score first for Detectron2's detectors)."""
    ids = ids or DatasetIds()
    boxes = instances.pred_boxes.tensor.detach().cpu().double()
    boxes = BoxMode.convert(boxes, BoxMode.XYXY_ABS, BoxMode.XYWH_ABS).tolist()
    scores = instances.scores.detach().cpu().tolist()
    classes = instances.pred_classes.detach().cpu().tolist()
    return [
        {
            "image_id": image_id,
            "category_id": ids.category_id(c),
            "bbox": [float(v) for v in box],
            "score": float(s),
        }
        for box, s, c in zip(boxes, scores, classes)
    ]


def write_coco_results(path: str | os.PathLike, results: Sequence[dict]) -> None:
    """Write a COCO results list as JSON, one detection per line."""
    lines = ",\n".join(json.dumps(r) for r in results)
    with open(path, "w") as f:
        f.write(f"[\n{lines}\n]\n" if results else "[]\n")
