"""Masks as training targets: a COCO-format dataset's polygons, compressed RLE and uncompressed
RLE give the same masks to the mask configs' loaders, crowd regions give none, and Mask R-CNN's
mask head trains on them (a step of the custom config on a mixed dataset)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_util

from . import needs_detectron2

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from dyhead_d2.config import load_config  # noqa: E402

from .custom_data import (  # noqa: E402
    mix_segmentation_formats,
    uncompressed_rle,
    write_custom_split,
)
from .tiny_quickstart import ROOT  # noqa: E402

CUSTOM_MASK = "configs/custom/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py"
COCO_MASK = "configs/COCO/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py"
H, W = 30, 40
TRIANGLE = [4.0, 3.0, 30.0, 6.0, 12.0, 25.0]


def triangle_dataset(tmp_path):
    """One 40x30 image with the same triangle four times: polygon, compressed RLE, uncompressed
    RLE (both pycocotools' rasterisation of the polygon) and as a crowd region."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (W, H), (90, 120, 200)).save(tmp_path / "images/a.png")
    rle = mask_util.merge(mask_util.frPyObjects([TRIANGLE], H, W))
    mask = mask_util.decode(rle)
    box = [float(v) for v in mask_util.toBbox(rle)]
    area = float(mask_util.area(rle))
    base = {"image_id": 5, "category_id": 3, "bbox": box, "area": area}
    anns = [
        {**base, "id": 1, "segmentation": [TRIANGLE]},
        {**base, "id": 2, "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}},
        {**base, "id": 3, "segmentation": uncompressed_rle(mask)},
        {**base, "id": 4, "segmentation": uncompressed_rle(mask), "iscrowd": 1},
    ]
    data = {
        "images": [{"id": 5, "file_name": "a.png", "height": H, "width": W}],
        "annotations": anns,
        "categories": [{"id": 3, "name": "triangle"}],
    }
    json_file = tmp_path / "data.json"
    json_file.write_text(json.dumps(data))
    return json_file, tmp_path / "images", mask.astype(bool)


def dataset_overrides(json_file, images):
    return [
        f"dataset.train_json={json_file}",
        f"dataset.train_images={images}",
        f"dataset.val_json={json_file}",
        f"dataset.val_images={images}",
        "dataloader.train.mapper.augmentations=[]",
    ]


def test_polygons_and_rle_give_the_same_mask_targets(tmp_path, registry):
    json_file, images, mask = triangle_dataset(tmp_path)
    cfg = load_config(str(ROOT / CUSTOM_MASK), dataset_overrides(json_file, images))
    (record,) = instantiate(cfg.dataloader.train.dataset)
    instances = instantiate(cfg.dataloader.train.mapper)(record)["instances"]
    # The crowd region is not a target; the three others are the same bitmask, pycocotools'.
    assert len(instances) == 3
    masks = instances.gt_masks.tensor.numpy()
    for m in masks:
        np.testing.assert_array_equal(m, mask)
    # What the mask head is trained on: each target cropped to a box and resized to 28x28.
    boxes = instances.gt_boxes.tensor
    targets = instances.gt_masks.crop_and_resize(boxes, 28).numpy()
    assert (targets == targets[0]).all() and 0.3 < targets[0].mean() < 0.8

    # The COCO config reads polygons as polygons (Detectron2's default format): its target of
    # the same triangle is the polygon rasterised at 28x28, close to the bitmap's.
    coco = load_config(str(ROOT / COCO_MASK), ["dataloader.train.mapper.augmentations=[]"])
    polygon_record = {**record, "annotations": record["annotations"][:1]}
    polygons = instantiate(coco.dataloader.train.mapper)(polygon_record)["instances"]
    assert type(polygons.gt_masks).__name__ == "PolygonMasks"
    from_polygon = polygons.gt_masks.crop_and_resize(polygons.gt_boxes.tensor, 28).numpy()[0]
    iou = (from_polygon & targets[0]).sum() / (from_polygon | targets[0]).sum()
    assert iou > 0.85, iou


def test_the_mask_quickstart_reads_the_generators_rle(tmp_path, monkeypatch, registry):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    cfg = load_config(
        str(ROOT / "configs/quickstart/mask_rcnn_dyhead_synthetic.py"),
        [
            "dataloader.train.dataset.names.num_train=6",
            "dataloader.train.dataset.names.num_val=2",
            "dataloader.train.mapper.augmentations=[]",
        ],
    )
    records = instantiate(cfg.dataloader.train.dataset)
    mapper = instantiate(cfg.dataloader.train.mapper)
    checked = 0
    for record in records:
        instances = mapper(record)["instances"]
        want = [mask_util.decode(a["segmentation"]).astype(bool) for a in record["annotations"]]
        assert len(instances) == len(want)
        if not want:
            continue  # an empty image (the generator makes some)
        for got, mask in zip(instances.gt_masks.tensor.numpy(), want):
            np.testing.assert_array_equal(got, mask)
            checked += 1
    assert checked >= 6


@pytest.mark.slow  # an R-50 Mask R-CNN step
def test_mask_rcnn_trains_on_every_segmentation_format(tmp_path, registry):
    """One training step of the custom Mask R-CNN config (one DyHead block, 128 px images) on a
    dataset with polygons, compressed and uncompressed RLE and crowd regions: every loss finite,
    the mask loss among them, and gradients reach the mask head."""
    train_json, train_images = write_custom_split(tmp_path, "train", 6)
    formats = mix_segmentation_formats(train_json)
    assert all(n >= 1 for n in formats.values()), formats
    cfg = load_config(
        str(ROOT / CUSTOM_MASK),
        [
            *dataset_overrides(train_json, train_images)[:4],
            f"dataset.val_json={train_json}",
            "model.backbone.dyhead.num_blocks=1",
            "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            "train.init_checkpoint=",
        ],
    )
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    batch = next(iter(instantiate(cfg.dataloader.train)))
    assert sum(len(b["instances"]) for b in batch) >= 2
    with EventStorage(0):
        losses = model(batch)
    assert {"loss_mask", "loss_cls", "loss_box_reg", "loss_rpn_cls"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    assert 0.3 < losses["loss_mask"].item() < 1.5  # binary cross-entropy of untrained masks
    sum(losses.values()).backward()
    grad = model.roi_heads.mask_head.predictor.weight.grad
    assert grad is not None and grad.abs().sum() > 0


@pytest.mark.parametrize("split", ["train", "val"])
def test_mask_config_refuses_a_dataset_without_masks(tmp_path, registry, split):
    from dyhead_d2.config import ConfigError, dataset_names

    json_file, images, _ = triangle_dataset(tmp_path)
    data = json.loads(json_file.read_text())
    del data["annotations"][0]["segmentation"]
    json_file.write_text(json.dumps(data))
    cfg = load_config(str(ROOT / CUSTOM_MASK), dataset_overrides(json_file, images))
    loader = cfg.dataloader.train if split == "train" else cfg.dataloader.test
    with pytest.raises(ConfigError) as err:
        dataset_names(loader.dataset.names)
    assert str(err.value) == (
        f"{split} JSON '{json_file}': annotation id 1 has no 'segmentation' (polygons or RLE), "
        "which a mask config needs"
    )
    # The same files with a box config: boxes are all it reads.
    box = load_config(
        str(ROOT / "configs/custom/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py"),
        dataset_overrides(json_file, images),
    )
    assert dataset_names(box.dataloader.train.dataset.names)
