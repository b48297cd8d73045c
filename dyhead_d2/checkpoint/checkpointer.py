"""A DetectionCheckpointer that also reads the published DyHead and ImageNet layouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.checkpoint.DyHeadCheckpointer")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402

from ..layers.finite import NonFiniteError, find_non_finite  # noqa: E402
from .convert import convert_checkpoint  # noqa: E402
from .formats import detect_format, unwrap_state_dict  # noqa: E402

__all__ = ["DyHeadCheckpointer"]


class DyHeadCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, plus on-the-fly conversion of foreign checkpoints.

    Files in the layouts :func:`~dyhead_d2.checkpoint.convert_checkpoint` knows (the authors' and
    MMDetection's DyHead detectors, torchvision ResNets, official Swin weights) are converted to
    the model's names when loaded, so ``train.init_checkpoint`` can point at them directly.
    Detector checkpoints must match the model exactly (a mismatch raises with the full list);
    ImageNet checkpoints fill the backbone and Detectron2 reports the rest as missing. Everything
    else (Detectron2's and this project's checkpoints, Caffe2 ``.pkl`` files such as MSRA's
    R-50.pkl) loads as in :class:`DetectionCheckpointer`.

    Only finite states are written or read: :meth:`save` refuses to write a checkpoint when the
    model, the optimizer or any other checkpointable holds a NaN or Inf (so ``last_checkpoint``
    always names a good one), and loading a file that holds one fails; both raise
    :class:`~dyhead_d2.layers.finite.NonFiniteError` naming the first such entry.
    """

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
        conversion = convert_checkpoint(state_dict, self.model, source)
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
