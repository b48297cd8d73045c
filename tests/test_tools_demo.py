"""tools/demo.py: the JSON holds the model's own detections in the dataset's ids, the picture has
the image's size, and every user mistake is one line with exit status 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.structures import Instances  # noqa: E402
from PIL import Image  # noqa: E402

from .tiny_quickstart import ROOT, tool_env  # noqa: E402
from .tool_entry import load_tool, tool_path  # noqa: E402

TOOL = tool_path("demo")


@pytest.fixture(scope="module")
def demo():
    return load_tool("demo")


def base_args(tiny):
    return ["--config-file", tiny.config]


def overrides(tiny):
    return [*tiny.overrides, f"train.init_checkpoint={tiny.checkpoint}"]


@torch.no_grad()
def model_outputs(model, path):
    """The model run directly: the image read with Pillow, in BGR, at its own size (the
    quickstart's test loader does not resize)."""
    bgr = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1]
    h, w = bgr.shape[:2]
    image = torch.as_tensor(np.ascontiguousarray(bgr.transpose(2, 0, 1)))
    return model([{"image": image, "height": h, "width": w}])[0]["instances"]


def test_json_holds_the_model_detections_in_dataset_ids(demo, tiny_model, tmp_path, capsys):
    images = tiny_model.val_images[:2]
    model = tiny_model.build()
    direct = [model_outputs(model, p) for p in images]
    # A threshold inside the first image's scores, so that it keeps some and drops some.
    threshold = float(direct[0].scores.median())
    kept = [inst[inst.scores >= threshold] for inst in direct]
    assert 0 < len(kept[0]) < len(direct[0])

    # The dataset's own ids, read from its JSON: image ids start at 1, category ids at 1.
    coco = json.loads((images[0].parent.parent / "instances.json").read_text())
    image_ids = {im["file_name"]: im["id"] for im in coco["images"]}
    category_ids = sorted(c["id"] for c in coco["categories"])
    assert category_ids[0] == 1

    out = tmp_path / "out"
    glob = str(images[1].parent / f"{images[1].stem}.*")
    code = demo.main(
        [
            *base_args(tiny_model),
            "--input",
            str(images[0]),
            glob,
            "--output",
            str(out),
            "--confidence-threshold",
            str(threshold),
            *overrides(tiny_model),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert f"{images[0]}: {len(kept[0])} detections" in printed

    for path, inst in zip(images, kept):
        results = json.loads((out / f"{path.stem}.json").read_text())
        assert len(results) == len(inst)
        assert {r["image_id"] for r in results} == {image_ids[path.name]}
        assert [r["category_id"] for r in results] == [
            category_ids[c] for c in inst.pred_classes.tolist()
        ]
        x0, y0, x1, y1 = inst.pred_boxes.tensor.unbind(1)
        xywh = torch.stack([x0, y0, x1 - x0, y1 - y0], dim=1)
        torch.testing.assert_close(
            torch.tensor([r["bbox"] for r in results]), xywh, rtol=0, atol=1e-4
        )
        torch.testing.assert_close(
            torch.tensor([r["score"] for r in results]), inst.scores, rtol=0, atol=1e-6
        )
        assert all(r["score"] >= threshold for r in results)
        with Image.open(out / f"{path.stem}.png") as picture:
            with Image.open(path) as original:
                assert picture.size == original.size
            pixels = np.asarray(picture.convert("RGB"))
        with Image.open(path) as original:
            # Boxes are drawn: the picture is not the image as it was.
            assert np.abs(pixels.astype(int) - np.asarray(original.convert("RGB"))).max() > 50


def test_mask_model_json_has_rle_masks_and_the_picture_shows_them(demo, tiny_mask_model, tmp_path):
    from pycocotools import mask as mask_util

    path = tiny_mask_model.val_images[0]
    inst = model_outputs(tiny_mask_model.build(), path)
    inst = inst[inst.scores >= 0.3]
    assert len(inst) > 0 and inst.pred_masks.any(dim=(1, 2)).all()
    args = ["--input", str(path), "--output", str(tmp_path), "--confidence-threshold", "0.3"]
    assert demo.main([*base_args(tiny_mask_model), *args, *overrides(tiny_mask_model)]) == 0
    results = json.loads((tmp_path / f"{path.stem}.json").read_text())
    assert len(results) == len(inst)
    # COCO's results format for masks: compressed RLE of the image's size, the model's masks.
    h, w = inst.image_size
    for r, mask in zip(results, inst.pred_masks):
        assert r["segmentation"]["size"] == [h, w] and isinstance(r["segmentation"]["counts"], str)
        np.testing.assert_array_equal(mask_util.decode(r["segmentation"]), mask.numpy())
    # The picture is the drawing of these detections, masks included.
    from detectron2.data import MetadataCatalog

    from dyhead_d2.inference import draw_detections, read_image

    rgb = read_image(str(path), "RGB")
    meta = MetadataCatalog.get("synthetic_val")
    boxes_only = Instances(inst.image_size, **{k: v for k, v in inst.get_fields().items()})
    boxes_only.remove("pred_masks")
    with Image.open(tmp_path / f"{path.stem}.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    np.testing.assert_array_equal(pixels, draw_detections(rgb, inst, meta))
    assert (pixels != draw_detections(rgb, boxes_only, meta)).any(axis=2).sum() > 100


def test_predictor_returns_the_masks_in_image_pixels(tiny_mask_model):
    import dyhead_d2

    path = tiny_mask_model.val_images[1]
    overrides = dict(item.split("=", 1) for item in tiny_mask_model.overrides)
    overrides = {k: int(v) if v.isdigit() else v for k, v in overrides.items()}
    predictor = dyhead_d2.Predictor(
        tiny_mask_model.config, str(tiny_mask_model.checkpoint), **overrides
    )
    got = predictor(str(path))
    want = model_outputs(tiny_mask_model.build(), path)
    with Image.open(path) as image:
        w, h = image.size
    assert got.pred_masks.dtype == torch.bool and got.pred_masks.shape == (len(want), h, w)
    assert len(got) > 0 and torch.equal(got.pred_masks, want.pred_masks)


def test_scale_enlarges_the_picture(demo, tiny_model, tmp_path):
    image = tiny_model.val_images[0]
    args = ["--input", str(image), "--output", str(tmp_path), "--scale", "1.5"]
    assert demo.main([*base_args(tiny_model), *args, *overrides(tiny_model)]) == 0
    with Image.open(tmp_path / f"{image.stem}.png") as picture, Image.open(image) as original:
        assert picture.size == tuple(round(s * 1.5) for s in original.size)


def _mistakes(tiny, tmp):
    empty = tmp / "empty"
    empty.mkdir()
    broken = tmp / "broken" / "image.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"not a JPEG at all")
    image = str(tiny.val_images[0])
    ckpt = [*tiny.overrides, f"train.init_checkpoint={tiny.checkpoint}"]
    return {
        "empty glob": (
            ["--input", str(tmp / "*.jpg"), *ckpt],
            f"glob pattern '{tmp / '*.jpg'}' matches no image file",
        ),
        "empty folder": (["--input", str(empty), *ckpt], f"folder '{empty}' has no image files"),
        "unreadable image": (["--input", str(broken), *ckpt], f"cannot read image '{broken}'"),
        "missing weights": (
            ["--input", image, *tiny.overrides, "train.init_checkpoint=/no/such/model.pth"],
            "checkpoint '/no/such/model.pth' does not exist",
        ),
        "no weights": (
            ["--input", image, *tiny.overrides],
            "no weights to run: set train.init_checkpoint=PATH",
        ),
    }


@pytest.mark.parametrize(
    "mistake", ["empty glob", "empty folder", "unreadable image", "missing weights", "no weights"]
)
def test_mistakes_end_in_one_line(mistake, demo, tiny_model, tmp_path, capsys):
    args, message = _mistakes(tiny_model, tmp_path)[mistake]
    code = demo.main([*base_args(tiny_model), "--output", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("demo.py: error: ") and message in err[0], err


def test_missing_config_is_one_line(demo, tmp_path, capsys):
    code = demo.main(["--config-file", str(tmp_path / "nope.py"), "--input", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"config file '{tmp_path / 'nope.py'}' does not exist" in err[0]


@pytest.mark.slow
def test_cli_exit_status_without_traceback(tiny_model, tmp_path):
    """As a command: status 2 and exactly one line on stderr (no traceback, no warnings)."""
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    run = subprocess.run(
        [sys.executable, str(TOOL), *base_args(tiny_model), "--input", str(broken)]
        + overrides(tiny_model),
        cwd=ROOT,
        env=tool_env(tiny_model.checkpoint.parent),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr[-3000:]
    assert run.stderr.splitlines() == [
        f"demo.py: error: cannot read image '{broken}': not an image file Pillow can decode"
    ], run.stderr[-3000:]
