"""Running a config's model on images: the predictor, input discovery, COCO results and pictures
(needs detectron2)."""

from .._detectron2 import require_detectron2

require_detectron2("dyhead_d2.inference")

from .coco_results import DatasetIds, coco_results, write_coco_results  # noqa: E402
from .drawing import class_name, detection_labels, draw_detections  # noqa: E402
from .inputs import IMAGE_EXTENSIONS, InputError, find_images, read_image  # noqa: E402
from .predictor import Predictor  # noqa: E402

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetIds",
    "InputError",
    "Predictor",
    "class_name",
    "coco_results",
    "detection_labels",
    "draw_detections",
    "find_images",
    "read_image",
    "write_coco_results",
]
