"""A recipe's schedule on another total batch size or a number of epochs.

In the spirit of Detectron2's ``DefaultTrainer.auto_scale_workers``: a recipe is written for a
reference total batch size (16 images for the COCO 1x recipes); trained with a batch ``k`` times
smaller, the linear scaling rule gives the LR ``/ k`` and every iteration count ``* k``, so the
model sees as many images at the same LR per image. Configs opt in with two keys of ``train``:

* ``reference_batch_size``: the recipe's total batch (0: never scale). When
  ``dataloader.train.total_batch_size`` differs, ``optimizer.lr``, ``train.max_iter``, the LR
  steps (``lr_multiplier``'s milestones), the warm-up (a fraction of ``max_iter``, so it scales
  with it), ``train.eval_period`` and ``train.checkpointer.period`` are scaled;
* ``epochs``: when > 0, ``train.max_iter`` becomes ``ceil(epochs * images / total batch)`` and
  the steps, warm-up, eval and checkpoint periods keep their fraction of the run.

Detectron2's own ``tools/lazyconfig_train_net.py`` does not read these keys and trains the
recipe as written.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from ..config import ConfigError

__all__ = ["apply_schedule_options"]

logger = logging.getLogger(__name__)


def _get(cfg: DictConfig, key: str, default=None):
    return OmegaConf.select(cfg, key, default=default)


def _scale_iterations(cfg: DictConfig, new_max_iter: int) -> dict[str, tuple]:
    """Set ``train.max_iter`` and rescale every count tied to it; returns ``{key: (old, new)}``."""
    old_max_iter = int(cfg.train.max_iter)
    ratio = new_max_iter / old_max_iter
    changes: dict[str, tuple] = {"train.max_iter": (old_max_iter, new_max_iter)}
    cfg.train.max_iter = new_max_iter
    for key in ("train.eval_period", "train.checkpointer.period"):
        old = _get(cfg, key)
        if old:  # 0 / absent: off, stays off
            new = max(1, round(old * ratio))
            OmegaConf.update(cfg, key, new)
            changes[key] = (old, new)
    milestones = _get(cfg, "lr_multiplier.scheduler.milestones")
    if milestones is not None:
        old = [int(m) for m in milestones]
        new = [max(1, round(m * ratio)) for m in old]
        if old and old[-1] == old_max_iter:
            new[-1] = new_max_iter  # the scheduler's length is the run's, exactly
        cfg.lr_multiplier.scheduler.milestones = new
        changes["lr steps"] = (old[:-1], new[:-1])
    warmup = _get(cfg, "lr_multiplier.warmup_length")
    if warmup is not None:
        changes["warm-up iterations"] = (
            round(warmup * old_max_iter),
            round(warmup * new_max_iter),
        )
    return changes


def apply_schedule_options(
    cfg: DictConfig, num_train_images: Callable[[], int] | None = None
) -> dict[str, tuple]:
    """Apply ``train.reference_batch_size`` and ``train.epochs`` (see the module docstring) to
    ``cfg`` in place and log the effective values in one line.

    ``num_train_images`` counts the training images (needed only with ``train.epochs``);
    default: the length of ``instantiate(cfg.dataloader.train.dataset)``.

    Returns ``{what: (recipe value, effective value)}``; empty when nothing changed.
    """
    reference = int(_get(cfg, "train.reference_batch_size", 0) or 0)
    epochs = float(_get(cfg, "train.epochs", 0) or 0)
    batch = _get(cfg, "dataloader.train.total_batch_size")
    if (not reference and not epochs) or batch is None:
        return {}
    if batch < 1 or reference < 0 or epochs < 0:
        raise ConfigError(
            f"dataloader.train.total_batch_size ({batch}) must be >= 1, "
            f"train.reference_batch_size ({reference}) and train.epochs ({epochs}) >= 0"
        )
    changes: dict[str, tuple] = {}
    if reference and batch != reference:
        factor = batch / reference
        old_lr = float(cfg.optimizer.lr)
        cfg.optimizer.lr = old_lr * factor
        changes["optimizer.lr"] = (old_lr, cfg.optimizer.lr)
        if not epochs:
            changes.update(_scale_iterations(cfg, max(1, round(cfg.train.max_iter / factor))))
    if epochs:
        if num_train_images is None:
            from detectron2.config import instantiate

            def num_train_images() -> int:
                return len(instantiate(cfg.dataloader.train.dataset))

        images = num_train_images()
        if images < 1:
            raise ConfigError("train.epochs is set but the training set has no images")
        max_iter = max(1, math.ceil(epochs * images / batch))
        changes.update(_scale_iterations(cfg, max_iter))
    if changes:
        text = "; ".join(f"{k} {old} -> {new}" for k, (old, new) in changes.items())
        if epochs:
            text += f" ({epochs:g} epochs of {images} images)"
        logger.info(f"Schedule for a total batch of {batch} (recipe: {reference or batch}): {text}")
    return changes
