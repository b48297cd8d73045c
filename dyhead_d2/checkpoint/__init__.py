"""Published checkpoints -> this project's models (the authors', MMDetection's, ImageNet ones).

:func:`convert_checkpoint` needs only PyTorch.
"""

from .convert import convert_checkpoint
from .formats import BACKBONE_SOURCES, DETECTOR_SOURCES, SOURCES, detect_format, unwrap_state_dict
from .mapping import CheckpointConversionError, Conversion

__all__ = [
    "BACKBONE_SOURCES",
    "CheckpointConversionError",
    "Conversion",
    "DETECTOR_SOURCES",
    "SOURCES",
    "convert_checkpoint",
    "detect_format",
    "unwrap_state_dict",
]
