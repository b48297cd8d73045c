"""Ending a diverging training run with one clear error.

Detectron2 already stops training on a non-finite loss (its trainer raises ``FloatingPointError``);
this project adds two more ``FloatingPointError`` sources: a DyHead block whose offsets are not
finite, and :class:`~dyhead_d2.checkpoint.DyHeadCheckpointer` refusing to write a non-finite
state. :func:`train_or_explain` runs Detectron2's training loop unchanged and turns any of them
into one :class:`TrainingDiverged` that says at which iteration, what was not finite (the loss, a
block's offsets or a checkpoint's entry, and the model's first non-finite parameter and gradient),
and which checkpoint ``--resume`` continues from. :func:`divergence_message` finds that message
again where Detectron2's ``launch`` re-raised a worker's error, so that the training script can
print it as its one-line error in every case.

In distributed training a DyHead's non-finite offsets stop every rank in the same step with the
same error (its check is all-reduced; see :class:`~dyhead_d2.layers.DyHead`), so no rank waits
in a collective for one that stopped.
"""

from __future__ import annotations

import logging
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import TrainerBase
from torch.multiprocessing import ProcessRaisedException

from ..layers.finite import NonFiniteError, find_non_finite

__all__ = ["TrainingDiverged", "divergence_message", "explain_divergence", "train_or_explain"]

logger = logging.getLogger("detectron2")  # the training log (log.txt)


class TrainingDiverged(FloatingPointError):
    """Training stopped because a value became NaN or Inf; the message says what, when, and
    from which checkpoint to resume."""


def explain_divergence(
    error: FloatingPointError, iteration: int, checkpointer: DetectionCheckpointer
) -> str:
    """One paragraph: the iteration, the error's cause, the model's first non-finite parameter
    and gradient (names as in the checkpoint's ``model``), and the last checkpoint on disk."""
    cause = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    if "Loss became infinite or NaN" in cause:  # Detectron2's SimpleTrainer
        cause = "the loss became non-finite: " + cause.split("!", 1)[-1].strip()
    parts = [f"training diverged at iteration {iteration}: {cause}."]
    params = dict(checkpointer.model.named_parameters())
    bad_param = find_non_finite(params)
    if bad_param is not None and bad_param[0] not in cause:
        parts.append(f"First non-finite parameter: {bad_param[0]} ({bad_param[1]}).")
    elif bad_param is None:
        parts.append("All parameters are finite.")
    grads = {n: p.grad for n, p in params.items() if p.grad is not None}
    bad_grad = find_non_finite(grads)
    if bad_grad is not None:
        parts.append(f"First non-finite gradient: {bad_grad[0]} ({bad_grad[1]}).")
    last = checkpointer.get_checkpoint_file()
    if last and os.path.isfile(last):
        parts.append(
            f"The last good checkpoint is {last}: fix the cause (e.g. a lower optimizer.lr, "
            "train.clip_grad.enabled=True, the data) and rerun with --resume to continue from it."
        )
    else:
        parts.append(
            f"No checkpoint was written in {checkpointer.save_dir}, so there is nothing to "
            "resume from; a rerun starts from train.init_checkpoint."
        )
    return " ".join(parts)


def train_or_explain(
    trainer: TrainerBase, start_iter: int, max_iter: int, checkpointer: DetectionCheckpointer
) -> None:
    """``trainer.train(start_iter, max_iter)``; a ``FloatingPointError`` during training becomes
    a :class:`TrainingDiverged` with :func:`explain_divergence`'s message (also logged).

    ``checkpointer`` is the run's checkpointer: its ``model`` (the bare model) is searched for
    non-finite values and its ``save_dir`` holds the checkpoint to resume from.
    """
    try:
        trainer.train(start_iter, max_iter)
    except FloatingPointError as e:
        message = explain_divergence(e, trainer.iter, checkpointer)
        logger.error(message)
        raise TrainingDiverged(message) from e


def divergence_message(error: BaseException) -> str | None:
    """The one-line message of a :class:`TrainingDiverged` or
    :class:`~dyhead_d2.layers.finite.NonFiniteError`, also when Detectron2's ``launch`` re-raised
    it from a worker process as a ``ProcessRaisedException`` (which carries the worker's
    traceback as text, the error's line last); None for any other error."""
    kinds = (TrainingDiverged, NonFiniteError)
    if isinstance(error, kinds):
        return str(error)
    if isinstance(error, ProcessRaisedException):
        lines = str(error).rstrip().splitlines()
        for kind in kinds:
            prefix = f"{kind.__module__}.{kind.__qualname__}: "
            if lines and lines[-1].startswith(prefix):
                return lines[-1][len(prefix) :]
    return None
