"""Training-script helpers on top of detectron2.engine (needs detectron2)."""

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.engine")

from .checks import check_checkpoint, check_datasets  # noqa: E402
from .config import ConfigError, load_config, resolve_device  # noqa: E402
from .schedule import apply_schedule_options  # noqa: E402
from .train_utils import AutocastForward, add_gradient_clipping  # noqa: E402

__all__ = [
    "AutocastForward",
    "ConfigError",
    "add_gradient_clipping",
    "apply_schedule_options",
    "check_checkpoint",
    "check_datasets",
    "load_config",
    "resolve_device",
]
