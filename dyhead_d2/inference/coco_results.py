"""Detections in COCO's results format, with the ids of the dataset the model was trained on.

The records are Detectron2's (``instances_to_coco_json``, what ``COCOEvaluator`` writes); this
module adds the mapping of contiguous class indices and image files to the dataset's own ids.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances

__all__ = ["DatasetIds", "coco_results", "write_coco_results"]

logger = logging.getLogger(__name__)


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
    :class:`DatasetIds`), ``bbox`` [x, y, width, height] in the instances' pixels, ``score``,
    and for a mask model ``segmentation``, each mask as COCO's compressed RLE (``{"size": [H,
    W], "counts": str}``); in the instances' order (highest score first for Detectron2's
    detectors).

    Detectron2's ``instances_to_coco_json`` writes the records; their contiguous class indices
    then become the dataset's category ids, as ``COCOEvaluator`` does before it evaluates."""
    ids = ids or DatasetIds()
    plain = Instances(
        instances.image_size,
        pred_boxes=Boxes(instances.pred_boxes.tensor.detach().cpu()),
        scores=instances.scores.detach().cpu(),
        pred_classes=instances.pred_classes.detach().cpu(),
    )
    if instances.has("pred_masks"):
        plain.pred_masks = instances.pred_masks.detach().cpu()
    results = instances_to_coco_json(plain, image_id)
    for r in results:
        r["category_id"] = ids.category_id(r["category_id"])
    return results


def write_coco_results(path: str | os.PathLike, results: Sequence[dict]) -> None:
    """Write a COCO results list as JSON, one detection per line."""
    lines = ",\n".join(json.dumps(r) for r in results)
    with open(path, "w") as f:
        f.write(f"[\n{lines}\n]\n" if results else "[]\n")
