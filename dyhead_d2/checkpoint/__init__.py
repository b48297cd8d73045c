"""Published checkpoints -> this project's models (the authors', MMDetection's, ImageNet ones).

:func:`convert_checkpoint` needs only PyTorch. :class:`DyHeadCheckpointer`, which applies it when
Detectron2 loads a file, needs detectron2 and is imported when first used.
"""

from .convert import convert_checkpoint
from .formats import BACKBONE_SOURCES, DETECTOR_SOURCES, SOURCES, detect_format, unwrap_state_dict
from .mapping import CheckpointConversionError, Conversion

__all__ = [
    "BACKBONE_SOURCES",
    "CheckpointConversionError",
    "Conversion",
    "DETECTOR_SOURCES",
    "DyHeadCheckpointer",
    "SOURCES",
    "convert_checkpoint",
    "detect_format",
    "unwrap_state_dict",
]


def __getattr__(name: str):
    if name == "DyHeadCheckpointer":
        from .checkpointer import DyHeadCheckpointer

        return DyHeadCheckpointer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
