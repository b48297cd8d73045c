"""A user's COCO-format dataset: every mistake is one line naming what is wrong, before any work;
registration maps non-contiguous ids as Detectron2 maps COCO's; boxes are clipped and counted."""

import json
import logging
from pathlib import Path

import pytest
from PIL import Image

from . import needs_detectron2

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402

from dyhead_d2.config import ConfigError, load_config  # noqa: E402
from dyhead_d2.data import (  # noqa: E402
    DatasetError,
    check_coco_dataset,
    clip_boxes,
    coco_dataset,
    coco_num_classes,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL = "configs/custom/atss_dyhead_small.py"


def write_dataset(tmp: Path, name="train", *, categories=None, annotations=None, images=None):
    """Three 40x30 images (ids 11, 12, 13), categories 3 and 42, two boxes (with masks) on image
    11 and none on the others; any part can be replaced."""
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    images = images or [
        {"id": 11 + i, "file_name": f"im{i}.png", "height": 30, "width": 40} for i in range(3)
    ]
    for k, img in enumerate(images):
        path = folder / img["file_name"]
        if not path.exists():
            Image.new("RGB", (img["width"], img["height"]), (k * 40, 90, 200)).save(path)
    categories = categories or [{"id": 42, "name": "square"}, {"id": 3, "name": "circle"}]
    if annotations is None:
        # Each with its box as a polygon: the mask configs read these files too.
        annotations = [
            {"id": 501, "image_id": 11, "category_id": 42, "bbox": [1, 2, 10, 8], "area": 80},
            {"id": 502, "image_id": 11, "category_id": 3, "bbox": [20, 5, 6, 6], "area": 36},
        ]
        for ann in annotations:
            x, y, w, h = ann["bbox"]
            ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    data = {"images": images, "annotations": annotations, "categories": categories}
    json_file = tmp / f"{name}.json"
    json_file.write_text(json.dumps(data))
    return json_file, folder


def test_missing_json_and_folder_name_the_path(tmp_path):
    json_file, folder = write_dataset(tmp_path)
    with pytest.raises(DatasetError, match=r"train JSON '.*/nope\.json' does not exist"):
        check_coco_dataset(tmp_path / "nope.json", folder, role="train")
    with pytest.raises(DatasetError, match=r"val image folder '.*/nowhere' does not exist"):
        check_coco_dataset(json_file, tmp_path / "nowhere", role="val")


def test_invalid_json_names_file_and_position(tmp_path):
    json_file, folder = write_dataset(tmp_path)
    json_file.write_text('{"images": [],\n  "annotations": [,]}')
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder)
    msg = str(err.value)
    assert str(json_file) in msg and "line 2, column 19 (character 33)" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"category_id": 5},
            r"annotation id 502: category_id 5 is not in 'categories' \(ids \[3, 42\]\)",
        ),
        ({"image_id": 99}, r"annotation id 502: image_id 99 has no image"),
        ({"bbox": [1, 2, 3]}, r"annotation id 502: 'bbox' must be \[x, y, width, height\]"),
        ({"id": 501}, r"annotation id 501 appears twice"),
    ],
)
def test_bad_annotation_names_its_id(tmp_path, change, message):
    anns = [
        {"id": 501, "image_id": 11, "category_id": 42, "bbox": [1, 2, 10, 8], "area": 80},
        {"id": 502, "image_id": 11, "category_id": 3, "bbox": [20, 5, 6, 6], "area": 36, **change},
    ]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    with pytest.raises(DatasetError, match=message) as err:
        check_coco_dataset(json_file, folder)
    assert "\n" not in str(err.value)


def rewrite(json_file: Path, change) -> None:
    data = json.loads(json_file.read_text())
    change(data)
    json_file.write_text(json.dumps(data))


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_or_malformed_top_level_key_is_named(tmp_path, key):
    json_file, folder = write_dataset(tmp_path)
    where = f"train JSON {str(json_file)!r}"
    rewrite(json_file, lambda data: data.pop(key))
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder, role="train")
    assert str(err.value) == f"{where} has no '{key}' list (COCO format)"
    rewrite(json_file, lambda data: data.update({key: {"0": {}}}))
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder, role="train")
    assert str(err.value) == f"{where} has a non-list '{key}' list (COCO format)"


def test_a_json_that_is_not_an_object_is_named(tmp_path):
    json_file, folder = write_dataset(tmp_path)
    json_file.write_text("[]")
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder, role="val")
    assert str(err.value) == (
        f"val JSON {str(json_file)!r}: expected an object with 'images', 'annotations' and "
        "'categories', got a list"
    )


def test_duplicate_image_and_category_ids_are_named(tmp_path):
    images = [
        {"id": 11 + i, "file_name": f"im{i}.png", "height": 30, "width": 40} for i in range(3)
    ]
    images[2]["id"] = 12
    json_file, folder = write_dataset(tmp_path, images=images, annotations=[])
    where = f"dataset JSON {str(json_file)!r}"
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder)
    assert str(err.value) == f"{where}: image id 12 appears twice in 'images'"
    categories = [
        {"id": 42, "name": "square"},
        {"id": 3, "name": "circle"},
        {"id": 42, "name": "x"},
    ]
    json_file, folder = write_dataset(tmp_path, categories=categories)
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder)
    assert str(err.value) == f"{where}: category id 42 appears twice in 'categories'"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"height": None}, "images[1] (id 12) has no ['height']"),
        ({"height": None, "width": None}, "images[1] (id 12) has no ['height', 'width']"),
        ({"height": 0}, "image id 12 has height 0 and width 40; both must be positive integers"),
        (
            {"width": "40"},
            "image id 12 has height 30 and width '40'; both must be positive integers",
        ),
        (
            {"width": 40.5},
            "image id 12 has height 30 and width 40.5; both must be positive integers",
        ),
    ],
)
def test_an_image_without_a_size_is_named(tmp_path, change, message):
    images = [
        {"id": 11 + i, "file_name": f"im{i}.png", "height": 30, "width": 40} for i in range(3)
    ]
    json_file, folder = write_dataset(tmp_path, images=images)
    image = images[1]
    for key, value in change.items():
        if value is None:
            del image[key]
        else:
            image[key] = value
    rewrite(json_file, lambda data: data.update(images=images))
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder)
    assert str(err.value) == f"dataset JSON {str(json_file)!r}: {message}"


# Uncompressed RLE of a 40x30 image (write_dataset's size): 100 pixels out, 20 in, the rest out.
RLE_40x30 = {"size": [30, 40], "counts": [100, 20, 1080]}


@pytest.mark.parametrize(
    "segmentation, message",
    [
        ([[1, 2, 10, 2]], r"annotation id 502: polygon 0 has 2 points; a polygon needs at least 3"),
        (
            [[1, 2, 10, 2, 10, 9], [1, 2, 3, 4, 5, 6, 7]],
            r"annotation id 502: polygon 1 has an odd number of coordinates \(7\)",
        ),
        ([1, 2, 10, 2, 10, 9], r"annotation id 502: 'segmentation' must be polygons"),
        (
            {"size": [3, 4], "counts": [12]},
            r"annotation id 502: RLE size \[3, 4\] is not its image's \[height, width\] \[30, 40\] "
            r"\(image id 11\)",
        ),
        (
            {"size": [40, 30], "counts": "PPY8"},
            r"annotation id 502: RLE size \[40, 30\] is not its image's",
        ),
        (
            {"size": [30, 40], "counts": [100, 20]},
            r"annotation id 502: RLE counts cover 120 pixels, not height \* width = 1200",
        ),
        ([[1, 2, 10, float("nan"), 10, 9]], r"polygon 0 has a coordinate that is not a finite"),
    ],
)
def test_bad_segmentation_names_its_annotation_and_file(tmp_path, segmentation, message):
    anns = [
        {"id": 501, "image_id": 11, "category_id": 42, "bbox": [1, 2, 10, 8], "area": 80},
        {
            "id": 502,
            "image_id": 11,
            "category_id": 3,
            "bbox": [20, 5, 6, 6],
            "area": 36,
            "segmentation": segmentation,
        },
    ]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    # Whatever the config: Detectron2's loader would drop a bad polygon's annotation, box and
    # all, and a mask of another size does not fit its image.
    for need_masks in (False, True):
        with pytest.raises(DatasetError, match=message) as err:
            check_coco_dataset(json_file, folder, role="train", need_masks=need_masks)
        assert str(err.value).startswith(f"train JSON '{json_file}': ")
        assert "\n" not in str(err.value)


def test_good_segmentations_of_every_kind_pass(tmp_path):
    anns = [
        {
            "id": 501,
            "image_id": 11,
            "category_id": 42,
            "bbox": [1, 2, 10, 8],
            "area": 80,
            "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10], [20, 20, 22, 20, 21, 23]],
        },
        {
            "id": 502,
            "image_id": 11,
            "category_id": 3,
            "bbox": [3, 10, 1, 20],
            "area": 20,
            "segmentation": RLE_40x30,
        },
        {
            "id": 503,
            "image_id": 12,
            "category_id": 3,
            "bbox": [0, 0, 40, 30],
            "area": 1200,
            "iscrowd": 1,
            # The whole image, as pycocotools encodes it.
            "segmentation": {"size": [30, 40], "counts": "0`U1"},
        },
    ]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    summary = check_coco_dataset(json_file, folder, need_area=True, need_masks=True)
    assert summary.num_annotations == 3


def test_mask_config_needs_a_segmentation_on_every_non_crowd_annotation(tmp_path):
    anns = [
        {"id": 501, "image_id": 11, "category_id": 42, "bbox": [1, 2, 10, 8], "area": 80},
        {"id": 502, "image_id": 11, "category_id": 3, "bbox": [20, 5, 6, 6], "area": 36},
        {
            "id": 503,
            "image_id": 12,
            "category_id": 3,
            "bbox": [0, 0, 9, 9],
            "area": 81,
            "iscrowd": 1,
        },
    ]
    anns[0]["segmentation"] = [[1, 2, 11, 2, 11, 10]]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    check_coco_dataset(json_file, folder, role="train")  # a box config: boxes are enough
    with pytest.raises(DatasetError) as err:
        check_coco_dataset(json_file, folder, role="train", need_masks=True)
    assert str(err.value) == (
        f"train JSON '{json_file}': annotation id 502 has no 'segmentation' (polygons or RLE), "
        "which a mask config needs"
    )
    # An empty list is no segmentation (as in Detectron2's loader).
    anns[1]["segmentation"] = []
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    with pytest.raises(DatasetError, match="annotation id 502 has no 'segmentation'"):
        check_coco_dataset(json_file, folder, role="train", need_masks=True)
    # Training never reads a crowd region's mask; COCO's segm evaluation reads every one.
    anns[1]["segmentation"] = [[20, 5, 26, 5, 26, 11]]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    check_coco_dataset(json_file, folder, role="train", need_masks=True)
    with pytest.raises(DatasetError, match="val JSON .*: crowd annotation id 503 has no 'segm"):
        check_coco_dataset(json_file, folder, role="val", need_area=True, need_masks=True)


def test_val_annotations_need_an_area(tmp_path):
    anns = [{"id": 7, "image_id": 12, "category_id": 3, "bbox": [1, 2, 10, 8]}]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    check_coco_dataset(json_file, folder)  # training does not need it
    with pytest.raises(DatasetError, match="annotation id 7 has no numeric 'area'"):
        check_coco_dataset(json_file, folder, need_area=True)


def test_missing_unreadable_or_wrong_size_image_names_the_file(tmp_path):
    json_file, folder = write_dataset(tmp_path)
    (folder / "im1.png").unlink()
    with pytest.raises(DatasetError, match=r"image file '.*/im1\.png' \(image id 12\) does not"):
        check_coco_dataset(json_file, folder, role="train")
    (folder / "im1.png").write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"'.*/im1\.png' \(image id 12\) cannot be read"):
        check_coco_dataset(json_file, folder, role="train")
    Image.new("RGB", (41, 30)).save(folder / "im1.png")
    with pytest.raises(DatasetError, match=r"im1\.png' \(image id 12\) is 41x30 pixels but"):
        check_coco_dataset(json_file, folder, role="train")
    # A truncated file passes a header check but not a full decode.
    Image.new("RGB", (40, 30), (10, 200, 30)).save(folder / "im1.png")
    good = (folder / "im1.png").read_bytes()
    (folder / "im1.png").write_bytes(good[: len(good) // 2])
    check_coco_dataset(json_file, folder, check_images="header")
    with pytest.raises(DatasetError, match=r"im1\.png' \(image id 12\) cannot be read"):
        check_coco_dataset(json_file, folder, check_images="decode")


def test_clip_boxes_counts_clipped_and_dropped():
    records = [
        {
            "height": 30,
            "width": 40,
            "annotations": [
                {"bbox": [1, 2, 10, 8]},  # inside: unchanged
                {"bbox": [-4, 25, 10, 10]},  # clipped to [0, 25, 6, 5]
                {"bbox": [35, 0, 10, 30]},  # clipped to [35, 0, 5, 30]
                {"bbox": [5, 5, 0, 7]},  # zero width: dropped
                {"bbox": [41, 5, 3, 3]},  # entirely outside: zero area once clipped, dropped
            ],
        },
        {"height": 30, "width": 40, "annotations": []},
    ]
    assert clip_boxes(records) == (2, 2)
    assert [a["bbox"] for a in records[0]["annotations"]] == [
        [1, 2, 10, 8],
        [0.0, 25.0, 6.0, 5.0],
        [35.0, 0.0, 5.0, 30.0],
    ]
    assert records[1]["annotations"] == []


def test_registration_maps_ids_like_detectron2_keeps_empty_images_and_logs_clipping(
    tmp_path, registry, caplog
):
    anns = [
        {"id": 501, "image_id": 11, "category_id": 42, "bbox": [1, 2, 10, 8], "area": 80},
        {"id": 502, "image_id": 11, "category_id": 3, "bbox": [35, 5, 10, 6], "area": 36},
        {"id": 503, "image_id": 12, "category_id": 3, "bbox": [4, 4, 0, 6], "area": 0},
    ]
    json_file, folder = write_dataset(tmp_path, annotations=anns)
    name = coco_dataset(str(json_file), str(folder), split="train")
    assert name.startswith("custom_train_")
    assert coco_dataset(str(json_file), str(folder), split="train") == name  # stable
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["circle", "square"]  # sorted by id: 3, 42
    assert meta.thing_dataset_id_to_contiguous_id == {3: 0, 42: 1}
    assert meta.evaluator_type == "coco" and meta.json_file == str(json_file)
    with caplog.at_level(logging.INFO, logger="dyhead_d2"):
        records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == [11, 12, 13]  # empty images kept
    assert [[a["category_id"] for a in r["annotations"]] for r in records] == [[1, 0], [], []]
    assert records[0]["annotations"][1]["bbox"] == [35.0, 5.0, 5.0, 6.0]
    lines = [r.getMessage() for r in caplog.records if "boxes partly outside" in r.getMessage()]
    assert lines == [
        f"Dataset '{name}': 3 images; clipped 1 boxes partly outside their image, dropped 1 "
        "boxes of zero area; 2 images have no annotation"
    ]
    assert coco_num_classes(str(json_file)) == 2


def test_val_categories_must_equal_train(tmp_path, registry):
    train_json, _ = write_dataset(tmp_path, "train")
    val_json, val_images = write_dataset(
        tmp_path, "val", categories=[{"id": 3, "name": "circle"}, {"id": 42, "name": "box"}]
    )
    with pytest.raises(DatasetError, match="both splits must list the same categories"):
        coco_dataset(str(val_json), str(val_images), split="val", categories_of=str(train_json))


def overrides(train_json, train_images, val_json, val_images, *extra):
    return [
        f"dataset.train_json={train_json}",
        f"dataset.train_images={train_images}",
        f"dataset.val_json={val_json}",
        f"dataset.val_images={val_images}",
        *extra,
    ]


def test_small_config_single_class_builds_loaders_model_and_evaluator(tmp_path, registry):
    one = [{"id": 9, "name": "thing"}]
    anns = [{"id": 1, "image_id": 11, "category_id": 9, "bbox": [1, 2, 10, 8], "area": 80}]
    train = write_dataset(tmp_path, "train", categories=one, annotations=anns)
    val = write_dataset(tmp_path, "val", categories=one, annotations=anns)
    cfg = load_config(str(ROOT / SMALL), overrides(*train, *val))
    model = instantiate(cfg.model)
    assert model.num_classes == 1 and model.head.cls_logits.out_channels == 1
    records = instantiate(cfg.dataloader.train.dataset)
    assert len(records) == 3  # images without annotations kept for training
    cfg.dataloader.train.dataset.filter_empty = True
    assert len(instantiate(cfg.dataloader.train.dataset)) == 1
    evaluator = instantiate(cfg.dataloader.evaluator)
    assert type(evaluator).__name__ == "COCOEvaluator"
    assert MetadataCatalog.get(evaluator._metadata.name).thing_classes == ["thing"]
    assert cfg.dataloader.train.total_batch_size == cfg.train.reference_batch_size


def test_config_without_the_dataset_keys_says_which(tmp_path):
    with pytest.raises(ConfigError, match="dataset.train_images, dataset.train_json, dataset.val"):
        load_config(str(ROOT / SMALL))


@pytest.mark.parametrize("eval_only", [False, True])
def test_preflight_stops_on_bad_data_before_any_work(tmp_path, train_net_module, eval_only):
    from detectron2.engine import default_argument_parser

    train = write_dataset(tmp_path, "train")
    val_json, val_images = write_dataset(tmp_path, "val")
    (val_images / "im2.png").write_bytes(b"\xff\xd8 truncated")
    flags = ["--eval-only"] if eval_only else []
    args = default_argument_parser().parse_args(
        ["--config-file", SMALL, *flags, *overrides(*train, val_json, val_images)]
    )
    with pytest.raises(ConfigError) as err:
        train_net_module.preflight(args)
    msg = str(err.value)
    assert msg.startswith(f"val images: image file '{val_images / 'im2.png'}' (image id 13)")
    assert "cannot be read" in msg and "\n" not in msg


@pytest.mark.slow  # a subprocess start; the fast preflight test above covers the check itself
def test_cli_missing_json_is_one_line_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    train_json, train_images = write_dataset(tmp_path, "train")
    args = overrides(tmp_path / "missing.json", train_images, train_json, train_images)
    out = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", SMALL, *args],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"train_net.py: error: train JSON '{tmp_path / 'missing.json'}' does not exist"
    )
    assert "Traceback" not in out.stderr


CUSTOM = {
    "atss_dyhead_R_50_caffe_FPN_1x.py": ("COCO/atss_dyhead_R_50_caffe_FPN_1x.py", "model"),
    "retinanet_dyhead_R_50_caffe_FPN_1x.py": (
        "COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py",
        "model",
    ),
    "faster_rcnn_dyhead_R_50_caffe_FPN_1x.py": (
        "COCO/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py",
        "model.roi_heads",
    ),
    "mask_rcnn_dyhead_R_50_caffe_FPN_1x.py": (
        "COCO/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py",
        "model.roi_heads",
    ),
    "atss_dyhead_swin_T_FPN_2x_ms.py": ("COCO/atss_dyhead_swin_T_FPN_2x_ms.py", "model"),
    "atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms.py": (
        "COCO/atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms.py",
        "model",
    ),
    "fcos_dyhead_R_50_caffe_FPN_1x.py": ("COCO/fcos_dyhead_R_50_caffe_FPN_1x.py", "model"),
    "atss_dyhead_small.py": ("quickstart/atss_dyhead_synthetic.py", "model"),
}


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_custom_config_is_its_recipe_on_the_dataset(tmp_path, registry, name):
    from omegaconf import OmegaConf

    recipe_file, classes_at = CUSTOM[name]
    data = overrides(*write_dataset(tmp_path, "train"), *write_dataset(tmp_path, "val"))
    cfg = load_config(str(ROOT / "configs/custom" / name), data)
    recipe = load_config(str(ROOT / "configs" / recipe_file))
    # The recipe's model, optimizer and schedule (imported, not copied).
    num_classes = OmegaConf.select(cfg, f"{classes_at}.num_classes")
    assert instantiate(num_classes) == 2
    OmegaConf.update(cfg, f"{classes_at}.num_classes", 80)
    OmegaConf.update(recipe, f"{classes_at}.num_classes", 80)
    assert OmegaConf.to_yaml(cfg.model) == OmegaConf.to_yaml(recipe.model)
    for key in ("optimizer", "lr_multiplier"):
        assert OmegaConf.to_yaml(cfg[key]) == OmegaConf.to_yaml(recipe[key])
    assert cfg.train.max_iter == recipe.train.max_iter
    assert cfg.train.init_checkpoint == recipe.train.init_checkpoint
    assert cfg.train.reference_batch_size == recipe.dataloader.train.total_batch_size
    # The data: the dataset.* files, registered under their own names.
    (train,) = [instantiate(cfg.dataloader.train.dataset.names)]
    (val,) = [instantiate(cfg.dataloader.test.dataset.names)]
    assert train.startswith("custom_train_") and val.startswith("custom_val_")
    assert MetadataCatalog.get(val).json_file == data[2].split("=", 1)[1]
    assert cfg.dataloader.train.dataset.filter_empty is False


def test_faster_rcnn_predictor_has_the_dataset_classes(tmp_path, registry):
    data = overrides(*write_dataset(tmp_path, "train"), *write_dataset(tmp_path, "val"))
    cfg = load_config(
        str(ROOT / "configs/custom/faster_rcnn_dyhead_R_50_caffe_FPN_1x.py"),
        [*data, "model.backbone.dyhead.num_blocks=1"],
    )
    predictor = instantiate(cfg.model).roi_heads.box_predictor
    assert predictor.cls_score.out_features == 3 and predictor.bbox_pred.out_features == 8


def test_mask_rcnn_predictors_have_the_dataset_classes_and_masks_are_required(tmp_path, registry):
    anns = [
        {
            "id": 501,
            "image_id": 11,
            "category_id": 42,
            "bbox": [1, 2, 10, 8],
            "area": 80,
            "segmentation": [[1, 2, 11, 2, 11, 10, 1, 10]],
        }
    ]
    data = overrides(
        *write_dataset(tmp_path, "train", annotations=anns),
        *write_dataset(tmp_path, "val", annotations=anns),
    )
    cfg = load_config(
        str(ROOT / "configs/custom/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py"),
        [*data, "model.backbone.dyhead.num_blocks=1"],
    )
    heads = instantiate(cfg.model).roi_heads
    assert heads.box_predictor.cls_score.out_features == 3
    assert heads.mask_head.predictor.out_channels == 2  # one mask per class
    # Polygons and RLE both: Detectron2's bitmask format; the splits must have masks.
    assert cfg.dataloader.train.mapper.instance_mask_format == "bitmask"
    assert cfg.dataloader.train.mapper.use_instance_mask is True
    assert cfg.dataloader.train.dataset.names.need_masks is True
    assert cfg.dataloader.test.dataset.names.need_masks is True
    assert instantiate(cfg.dataloader.test.dataset.names).startswith("custom_val_")
