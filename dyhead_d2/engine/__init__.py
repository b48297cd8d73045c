"""Training-script helpers on top of detectron2.engine (needs detectron2): what ``train_net.py``
and the device check need to train, and nothing else (configs are :mod:`dyhead_d2.config`'s)."""

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.engine")

from .checks import check_datasets  # noqa: E402
from .divergence import TrainingDiverged, train_or_explain  # noqa: E402
from .precision import Precision, choose_precision, cpu_has_native_bfloat16  # noqa: E402
from .schedule import apply_schedule_options  # noqa: E402
from .train_utils import AutocastForward, add_gradient_clipping, build_trainer  # noqa: E402

__all__ = [
    "AutocastForward",
    "Precision",
    "TrainingDiverged",
    "add_gradient_clipping",
    "apply_schedule_options",
    "build_trainer",
    "check_datasets",
    "choose_precision",
    "cpu_has_native_bfloat16",
    "train_or_explain",
]
