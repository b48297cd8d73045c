"""A DetectionCheckpointer that also reads the published DyHead and ImageNet layouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.checkpoint.DyHeadCheckpointer")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402

from ..layers.finite import NonFiniteError, find_non_finite  # noqa: E402
from .classes import (  # noqa: E402
    absent_branches,
    class_dependent_keys,
    split_class_mismatches,
)
from .convert import convert_checkpoint  # noqa: E402
from .formats import detect_format, unwrap_state_dict  # noqa: E402
from .mapping import CheckpointConversionError  # noqa: E402

__all__ = ["DyHeadCheckpointer"]

# Buffers the config defines; Detectron2 does not expect them in a checkpoint either.
_CONFIG_BUFFERS = ("pixel_mean", "pixel_std")


class DyHeadCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, plus on-the-fly conversion of foreign checkpoints.

    Files in the layouts :func:`~dyhead_d2.checkpoint.convert_checkpoint` knows (the authors' and
    MMDetection's DyHead detectors, torchvision ResNets, official Swin weights) are converted to
    the model's names when loaded, so ``train.init_checkpoint`` can point at them directly.
    Detector checkpoints must match the model exactly (a mismatch raises with the full list);
    ImageNet checkpoints fill the backbone and Detectron2 reports the rest as missing. Everything
    else (Detectron2's and this project's checkpoints, Caffe2 ``.pkl`` files such as MSRA's
    R-50.pkl) loads as in :class:`DetectionCheckpointer`.

    With ``allow_new_classes=True`` (fine-tuning), a detector checkpoint of another number of
    classes loads too: its class-dependent tensors
    (:func:`~dyhead_d2.checkpoint.classes.class_dependent_keys`) are skipped, one log line each
    saying why, and keep the model's initialisation from scratch. Any other shape mismatch fails
    with the full list, and so does a checkpoint with a classifier (a detector's) that does not
    fill all of the model or has keys the model lacks, whatever its layout, with one exception: a
    branch of which the checkpoint has no key at all (the mask head of a Mask R-CNN fine-tuned
    from a Faster R-CNN, :func:`~dyhead_d2.checkpoint.classes.absent_branches`) starts from
    scratch, in one log line. Without it (evaluation, the tools), a checkpoint whose classifier
    has another shape is refused.

    Only finite states are written or read: :meth:`save` refuses to write a checkpoint when the
    model, the optimizer or any other checkpointable holds a NaN or Inf (so ``last_checkpoint``
    always names a good one), and loading a file that holds one fails; both raise
    :class:`~dyhead_d2.layers.finite.NonFiniteError` naming the first such entry.
    """

    def __init__(self, model, save_dir: str = "", *, allow_new_classes: bool = False, **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.allow_new_classes = allow_new_classes

    def _class_keys(self) -> dict[str, str]:
        return class_dependent_keys(self.model) if self.allow_new_classes else {}

    def _absent_branches(self, checkpoint_keys) -> dict[str, str]:
        return absent_branches(self.model, checkpoint_keys) if self.allow_new_classes else {}

    def save(self, name: str, **kwargs: Any) -> None:
        if self.save_dir and self.save_to_disk:
            state = {"model": self.model.state_dict()}
            state.update({k: obj.state_dict() for k, obj in self.checkpointables.items()})
            bad = find_non_finite(state)
            if bad is not None:
                raise NonFiniteError(
                    f"refusing to write checkpoint {name}.pth: {bad[0]} holds {bad[1]}"
                )
        super().save(name, **kwargs)

    def _load_file(self, filename: str) -> dict[str, Any]:
        loaded = self._load_finite_file(filename)
        if loaded.get("matching_heuristics", False) or not isinstance(loaded.get("model"), Mapping):
            return loaded  # Caffe2 / pycls layouts: Detectron2's own name matching
        try:
            state_dict = unwrap_state_dict(loaded["model"])
        except TypeError:
            return loaded  # not a plain state dict: leave it to Detectron2
        source = detect_format(state_dict)
        if source is None:
            return loaded
        conversion = convert_checkpoint(
            state_dict,
            self.model,
            source,
            shape_may_differ=self._class_keys(),
            may_be_absent=self._absent_branches(state_dict),
        )
        self.logger.info(f"Converted {filename}:\n{conversion.summary()}")
        return {
            "model": conversion.state_dict,
            "__author__": f"{source} (converted by dyhead_d2.checkpoint)",
        }

    def _load_finite_file(self, filename: str) -> dict[str, Any]:
        loaded = super()._load_file(filename)
        bad = find_non_finite({k: v for k, v in loaded.items() if k != "__author__"})
        if bad is not None:
            raise NonFiniteError(
                f"checkpoint {filename!r} is not usable: {bad[0]} holds {bad[1]} "
                "(written from a diverged run?)"
            )
        return loaded

    def _load_model(self, checkpoint: dict[str, Any]):
        if checkpoint.get("matching_heuristics", False):
            return super()._load_model(checkpoint)  # ImageNet .pkl files: unchanged
        model_state = self.model.state_dict()
        if not self.allow_new_classes:
            # Detectron2 would skip a classifier of another shape with a warning and evaluate a
            # random one: refuse instead.
            wrong = [
                f"shape mismatch: {key}: checkpoint {tuple(checkpoint['model'][key].shape)}, "
                f"model {tuple(model_state[key].shape)} (a checkpoint of other classes; only "
                "training fine-tunes it to this model's)"
                for key in class_dependent_keys(self.model)
                if key in checkpoint["model"]
                and hasattr(checkpoint["model"][key], "shape")
                and tuple(checkpoint["model"][key].shape) != tuple(model_state[key].shape)
            ]
            if wrong:
                raise CheckpointConversionError("checkpoint", wrong)
            return super()._load_model(checkpoint)
        class_keys = self._class_keys()
        shapes = {
            key: (tuple(value.shape), tuple(model_state[key].shape))
            for key, value in checkpoint["model"].items()
            if key in model_state
            and hasattr(value, "shape")
            and tuple(value.shape) != tuple(model_state[key].shape)
        }
        skipped, problems = split_class_mismatches(shapes, class_keys)
        branches = {}
        if any(key in checkpoint["model"] for key in class_keys):
            # A checkpoint with a classifier is a detector's: all of the model must come from it
            # (a partly loaded detector trains, and evaluates, to a plausible but wrong result),
            # except a branch it has nothing of (a box detector's checkpoint in a mask model).
            branches = self._absent_branches(checkpoint["model"])
            absent = tuple(branches)
            problems += [
                f"model key not filled by the checkpoint: {key}"
                for key in model_state
                if key not in checkpoint["model"]
                and key not in _CONFIG_BUFFERS
                and not key.startswith(absent)
            ]
            problems += [
                f"checkpoint key not in the model: {key}"
                for key in checkpoint["model"]
                if key not in model_state
            ]
        if problems:
            raise CheckpointConversionError("checkpoint", problems)
        for key, why in skipped.items():
            del checkpoint["model"][key]
            self.logger.info(
                f"Not loading {key}: {why}; it keeps its initialisation from scratch "
                "(fine-tuning to another number of classes)"
            )
        for prefix, what in branches.items():
            count = sum(1 for key in model_state if key.startswith(prefix))
            self.logger.info(
                f"Not loading {prefix[:-1]}: {what} ({count} tensors), which the checkpoint does "
                "not have (a box detector's); it keeps its initialisation from scratch"
            )
        incompatible = super()._load_model(checkpoint)
        if incompatible is not None:
            absent = tuple(branches)
            incompatible.missing_keys[:] = [
                key
                for key in incompatible.missing_keys
                if key not in skipped and not key.startswith(absent)
            ]
        return incompatible
