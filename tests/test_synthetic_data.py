"""Synthetic shapes dataset: determinism, caching, truthful annotations and masks, COCO/Detectron2
loading.

Annotations are checked against an independent re-rendering: each object's outline is rasterised
here with an even-odd point-in-polygon test at pixel centres (the generator uses Pillow), and the
object's colour is looked up in the JPEG that was written to disk.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_util

import dyhead_d2.data.synthetic as synthetic_module
from dyhead_d2.data import (
    CATEGORY_NAMES,
    GENERATOR_VERSION,
    SyntheticSpec,
    build_synthetic_coco,
    default_root,
    register_synthetic,
    render_synthetic_image,
    synthetic_cache_dir,
)

from . import needs_detectron2

N = 16  # images per test split: enough for every size range, occlusion and empty images
# A higher empty fraction than the default so that 16 images surely contain a few empty ones.
KW = {"seed": 3, "empty_fraction": 0.25}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return build_synthetic_coco(tmp_path_factory.mktemp("built"), "val", N, **KW)


def tree_bytes(image_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(image_dir.iterdir())}


def rasterise(polygon: np.ndarray, h: int, w: int) -> np.ndarray:
    """Pixels whose centre (at integer coordinates) is inside ``polygon`` or on its outline.

    "On" means within half a pixel: a filled polygon is drawn with its outline, which also paints
    star tips too thin to contain any pixel centre.
    """
    lo = np.maximum(np.floor(polygon.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(polygon.max(axis=0)).astype(int) + 2, (w, h))
    ys, xs = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float64)
    inside = np.zeros(ys.shape, dtype=bool)
    on_outline = np.zeros(ys.shape, dtype=bool)
    for (xa, ya), (xb, yb) in zip(polygon, np.roll(polygon, -1, axis=0)):
        # Even-odd rule: count crossings of a ray going right from each pixel centre.
        if ya != yb:
            crosses = (ya > ys) != (yb > ys)
            inside ^= crosses & (xs < xa + (ys - ya) * (xb - xa) / (yb - ya))
        # Distance from each centre to the edge segment.
        dx, dy = xb - xa, yb - ya
        t = np.clip(((xs - xa) * dx + (ys - ya) * dy) / max(dx * dx + dy * dy, 1e-12), 0, 1)
        on_outline |= np.hypot(xs - xa - t * dx, ys - ya - t * dy) <= 0.5
    out = np.zeros((h, w), dtype=bool)
    out[lo[1] : hi[1], lo[0] : hi[0]] = inside | on_outline
    return out


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    p = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([p[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], axis=0)


def erode(mask: np.ndarray) -> np.ndarray:
    return ~dilate(~mask)


def box_edges(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


def shoelace_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def solidity(polygon: np.ndarray) -> float:
    """Polygon area over convex hull area (Andrew's monotone chain): 1 for convex outlines."""
    pts = sorted(set(map(tuple, polygon.tolist())))

    def half(points):
        chain = []
        for q in points:
            while len(chain) >= 2:
                (ox, oy), (ax, ay) = chain[-2], chain[-1]
                if (ax - ox) * (q[1] - oy) - (ay - oy) * (q[0] - ox) > 0:
                    break
                chain.pop()
            chain.append(q)
        return chain[:-1]

    hull = np.array(half(pts) + half(pts[::-1]))
    return shoelace_area(polygon) / shoelace_area(hull)


# Solidity of each class's outline. Exact values: 1 for circle, square and triangle, 0.71 for the
# cross, 0.52 for the star; the ranges allow for vertices rounded to whole pixels on tiny objects.
SOLIDITY = {
    "circle": (0.85, 1.0),
    "square": (0.85, 1.0),
    "triangle": (0.85, 1.0),
    "cross": (0.6, 0.8),
    "star": (0.4, 0.65),
}


def test_build_is_deterministic_cached_and_independent_of_workers(tmp_path, caplog):
    image_dir_a, json_a = build_synthetic_coco(tmp_path / "a", "val", N, **KW)
    image_dir_b, json_b = build_synthetic_coco(tmp_path / "b", "val", N, num_workers=2, **KW)
    assert json_a.read_bytes() == json_b.read_bytes()
    files = tree_bytes(image_dir_a)
    assert len(files) == N
    assert files == tree_bytes(image_dir_b)
    # Image i does not depend on how many images the split has.
    image_dir_c, _ = build_synthetic_coco(tmp_path / "c", "val", 5, **KW)
    assert tree_bytes(image_dir_c) == {name: files[name] for name in sorted(files)[:5]}

    # The second call reuses the cache: nothing is generated and nothing rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in [json_a, *image_dir_a.iterdir()]}
    entries = sorted(p.name for p in (tmp_path / "a" / "synthetic_shapes").iterdir())
    with caplog.at_level(logging.DEBUG, logger="dyhead_d2.data.synthetic"):
        assert build_synthetic_coco(tmp_path / "a", "val", N, **KW) == (image_dir_a, json_a)
    messages = [r.getMessage() for r in caplog.records]
    assert any("cached in" in m for m in messages), messages
    assert not any("Generating" in m for m in messages), messages
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert sorted(p.name for p in (tmp_path / "a" / "synthetic_shapes").iterdir()) == entries


def test_generation_shows_progress_lines_when_not_on_a_terminal(tmp_path, caplog):
    """Writing a split takes seconds to a minute: where stderr is not a terminal (here: captured)
    a line at each tenth of the images and one when done, on the dyhead_d2.progress logger."""

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "dyhead_d2.progress"]

    with caplog.at_level(logging.INFO, logger="dyhead_d2.progress"):
        build_synthetic_coco(tmp_path, "val", 16, image_size=64, seed=1)
    expected = [f"synthetic val: {n}/16 images ({100 * n // 16}%)" for n in range(2, 16, 2)]
    assert lines()[:-1] == expected
    assert lines()[-1].startswith("synthetic val: 16 images done in ")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dyhead_d2.progress"):
        build_synthetic_coco(tmp_path, "val", 16, image_size=64, seed=1)  # cached: no work
    assert lines() == []


def test_cache_folder_encodes_version_and_parameters(tmp_path):
    d = synthetic_cache_dir(tmp_path, "train", 100, SyntheticSpec(image_size=(200, 300)), seed=7)
    assert d.parent == tmp_path.resolve() / "synthetic_shapes"
    assert d.name.startswith(f"train-n100-200-300px-seed7-v{GENERATOR_VERSION}-")
    # Every parameter takes part, not only those spelled out in the name.
    assert d != synthetic_cache_dir(
        tmp_path, "train", 100, SyntheticSpec(image_size=(200, 300), jpeg_quality=80), seed=7
    )
    # One spelling per setting: a fixed size given as a range is the same dataset.
    assert synthetic_cache_dir(tmp_path, "val", 4, SyntheticSpec(image_size=(256, 256))) == (
        synthetic_cache_dir(tmp_path, "val", 4, SyntheticSpec(image_size=256))
    )
    with pytest.raises(ValueError, match="split"):
        synthetic_cache_dir(tmp_path, "../train", 100)


def test_variable_image_sizes(tmp_path):
    image_dir, json_file = build_synthetic_coco(tmp_path, "train", 4, image_size=(160, 224))
    images = json.loads(json_file.read_text())["images"]
    sizes = {(img["height"], img["width"]) for img in images}
    assert len(sizes) == 4 and all(160 <= s <= 224 for hw in sizes for s in hw)
    for img in images:
        assert Image.open(image_dir / img["file_name"]).size == (img["width"], img["height"])


def test_default_root_follows_detectron2_convention(monkeypatch, tmp_path):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert default_root() == tmp_path
    assert synthetic_cache_dir(None, "val", 4).parent.parent == tmp_path
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert default_root() == Path("datasets")


def test_annotations_are_truthful(built):
    image_dir, json_file = built
    coco = json.loads(json_file.read_text())
    assert [c["name"] for c in coco["categories"]] == list(CATEGORY_NAMES)
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4, 5]
    anns_by_image = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        anns_by_image[ann["image_id"]].append(ann)

    max_sides, visible_fractions, ious, num_empty = [], [], [], 0
    for index, img in enumerate(coco["images"]):
        h, w = img["height"], img["width"]
        sample = render_synthetic_image("val", index, SyntheticSpec(empty_fraction=0.25), seed=3)
        anns = anns_by_image[img["id"]]
        assert len(anns) == len(sample.objects)
        num_empty += not anns
        pixels = np.asarray(Image.open(image_dir / img["file_name"]), dtype=np.float64)
        assert pixels.shape == (h, w, 3)
        # The JPEG is the rendered image up to compression, which also smooths the pixel noise.
        assert np.abs(pixels - sample.image).mean() < 8.0

        masks = [rasterise(obj.polygon, h, w) for obj in sample.objects]
        for i, (ann, obj, mask) in enumerate(zip(anns, sample.objects, masks)):
            assert obj.category_id == ann["category_id"]
            # The outline has the class's shape.
            n_vertices = {"circle": 64, "square": 4, "triangle": 3, "star": 10, "cross": 12}
            assert len(obj.polygon) == n_vertices[obj.category_name]
            lo, hi = SOLIDITY[obj.category_name]
            assert lo <= solidity(obj.polygon) <= hi + 1e-9
            # Pillow's rasterisation and the one here differ only along the outline.
            assert not (obj.mask & ~dilate(mask)).any() and not (mask & ~dilate(obj.mask)).any()

            visible = mask & ~np.any(masks[i + 1 :], axis=0) if i + 1 < len(masks) else mask
            visible_fractions.append(visible.sum() / mask.sum())
            x, y, bw, bh = ann["bbox"]
            assert 0 <= x and 0 <= y and x + bw <= w and y + bh <= h
            assert np.abs(box_edges(visible) - [x, y, x + bw, y + bh]).max() <= 1
            assert ann["area"] == obj.area == obj.visible.sum()
            # Rasterisations differ along outlines only, so areas by at most that 1 px band.
            band = dilate(visible) & ~erode(visible)
            assert abs(ann["area"] - visible.sum()) <= band.sum()
            assert ann["iscrowd"] == 0
            max_sides.append(max(bw, bh))

            # The mask is the visible pixels exactly: the generator's own, the pixels in the box
            # and area; against the re-rendering here it differs only along the outlines.
            assert ann["segmentation"]["size"] == [h, w]
            segm = mask_util.decode(ann["segmentation"]).astype(bool)
            np.testing.assert_array_equal(segm, obj.visible)
            assert segm.sum() == ann["area"] and box_edges(segm).tolist() == [
                x,
                y,
                x + bw,
                y + bh,
            ]
            assert not (segm & ~dilate(visible)).any() and not (visible & ~dilate(segm)).any()
            ious.append((segm & visible).sum() / (segm | visible).sum())
            # Occlusion is applied: no pixel of a later object is in the mask.
            for later in sample.objects[i + 1 :]:
                assert not (segm & later.mask).any()

            # The pixels well inside the mask have the object's colour in the file, and the
            # pixels just outside do not (every object contrasts with what it covers).
            core = erode(erode(segm))
            if core.sum() >= 4:
                assert np.abs(pixels[core].mean(axis=0) - obj.colour).max() < 12

    max_sides = np.array(max_sides)
    assert num_empty >= 2
    assert (max_sides < 16).sum() >= 3 and (max_sides > 100).sum() >= 1
    assert min(visible_fractions) >= 0.28  # the generator's 30%, up to rasterisation
    assert sum(f < 0.9 for f in visible_fractions) >= 3  # occlusion is there
    # Pillow's fill and the even-odd one here agree but for a few outline pixels.
    assert np.median(ious) > 0.9 and min(ious) > 0.6


def test_pycocotools_loads_and_scores_ground_truth_as_perfect(built):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, json_file = built
    gt = COCO(str(json_file))
    assert len(gt.getImgIds()) == N
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CATEGORY_NAMES)
    anns = gt.loadAnns(gt.getAnnIds())
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in anns
    ]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # COCO's small and medium ranges have objects here (AP would be -1 otherwise). Its "large"
    # (area >= 96^2) is rare in 256 px images: only big squares and circles reach it.
    assert ev.stats[3] == pytest.approx(1.0) and ev.stats[4] == pytest.approx(1.0)


def test_pycocotools_scores_ground_truth_masks_as_perfect(built):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, json_file = built
    gt = COCO(str(json_file))
    anns = gt.loadAnns(gt.getAnnIds())
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": a["segmentation"],
            "score": 1,
        }
        for a in anns
    ]
    ev = COCOeval(gt, gt.loadRes(dets), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    # A mask one pixel thinner all round is no longer perfect: the masks are what is scored.
    thinner = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "segmentation": mask_util.encode(np.asfortranarray(erode(gt.annToMask(a) > 0))),
            "score": 1,
        }
        for a in anns
    ]
    ev = COCOeval(gt, gt.loadRes([t for t in thinner if mask_util.area(t["segmentation"])]), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] < 0.9


def test_cache_without_masks_is_never_used(tmp_path, monkeypatch):
    # What the generator wrote before it wrote masks: version 1, the same folder scheme, the
    # same images and boxes, no segmentation.
    with monkeypatch.context() as m:
        m.setattr(synthetic_module, "GENERATOR_VERSION", 1)
        old_images, old_json = build_synthetic_coco(tmp_path, "val", 4, **KW)
    coco = json.loads(old_json.read_text())
    for ann in coco["annotations"]:
        del ann["segmentation"]
    old_json.write_text(json.dumps(coco))
    old_bytes = old_json.read_bytes()

    image_dir, json_file = build_synthetic_coco(tmp_path, "val", 4, **KW)
    assert json_file.parent != old_json.parent and "-v1-" in old_json.parent.name
    new = json.loads(json_file.read_text())
    assert new["annotations"] and all("segmentation" in a for a in new["annotations"])
    # Only the masks are new: images and boxes are those of the cache without masks.
    assert [{k: v for k, v in a.items() if k != "segmentation"} for a in new["annotations"]] == (
        coco["annotations"]
    )
    assert tree_bytes(image_dir) == tree_bytes(old_images)
    assert old_json.read_bytes() == old_bytes  # left as it was


def test_interrupted_build_leaves_nothing_that_looks_complete(tmp_path):
    # Ctrl-C while the images are being written: the temporary folder goes with the process.
    code = (
        "from dyhead_d2.data import build_synthetic_coco\n"
        f"build_synthetic_coco({str(tmp_path)!r}, 'val', 100000, image_size=64, seed=3)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob("synthetic_shapes/.*.tmp-*/images/*.jpg")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "no image written in time"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "KeyboardInterrupt" in stderr, stderr[-3000:]
    assert list((tmp_path / "synthetic_shapes").iterdir()) == []

    # A process killed outright leaves its temporary folder; it is not taken for the cache.
    final = synthetic_cache_dir(tmp_path, "val", 6, SyntheticSpec(empty_fraction=0.25), seed=3)
    leftover = final.parent / f".{final.name}.tmp-1-deadbeef"
    (leftover / "images").mkdir(parents=True)
    (leftover / "instances.json").write_text("{}")
    image_dir, json_file = build_synthetic_coco(tmp_path, "val", 6, **KW)
    assert json_file.parent == final
    assert len(json.loads(json_file.read_text())["images"]) == 6
    assert len(list(image_dir.iterdir())) == 6


def test_register_without_detectron2_says_how_to_install(monkeypatch, tmp_path):
    for name in ("detectron2", "detectron2.data", "detectron2.data.datasets"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(
        ImportError,
        match="pip install --no-build-isolation 'git\\+https://github.com/facebookresearch",
    ):
        register_synthetic(root=tmp_path)
    assert not os.listdir(tmp_path)  # nothing generated before the check


def test_register_with_detectron2(tmp_path):
    needs_detectron2()
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import load_coco_json
    from detectron2.structures import BoxMode

    from .d2_models import unregister_datasets

    prefix = f"synthetic_test_{uuid.uuid4().hex[:8]}"
    names = (f"{prefix}_train", f"{prefix}_val")
    try:
        assert register_synthetic(prefix, tmp_path, num_train=12, num_val=6, **KW) == names
        for name, n in zip(names, (12, 6)):
            meta = MetadataCatalog.get(name)
            assert meta.thing_classes == list(CATEGORY_NAMES)
            assert meta.evaluator_type == "coco"
            dicts = DatasetCatalog.get(name)
            assert len(dicts) == n
            num_anns = len(json.loads(Path(meta.json_file).read_text())["annotations"])
            assert sum(len(d["annotations"]) for d in dicts) == num_anns
            assert Path(dicts[0]["file_name"]).is_file()

        # load_coco_json directly: COCO ids 1..5 become contiguous 0..4, boxes are kept as XYWH.
        meta = MetadataCatalog.get(names[1])
        dicts = load_coco_json(meta.json_file, meta.image_root, names[1])
        assert meta.thing_dataset_id_to_contiguous_id == {i + 1: i for i in range(5)}
        coco_anns = json.loads(Path(meta.json_file).read_text())["annotations"]
        d2_anns = [a for d in dicts for a in d["annotations"]]
        assert [a["category_id"] for a in d2_anns] == [a["category_id"] - 1 for a in coco_anns]
        assert [a["bbox"] for a in d2_anns] == [a["bbox"] for a in coco_anns]
        assert all(a["bbox_mode"] == BoxMode.XYWH_ABS for a in d2_anns)

        # Same arguments: a no-op. Different data under the same names: an error.
        loader = DatasetCatalog[names[0]]
        assert register_synthetic(prefix, tmp_path, num_train=12, num_val=6, **KW) == names
        assert DatasetCatalog[names[0]] is loader
        with pytest.raises(ValueError, match="already registered with different metadata"):
            register_synthetic(prefix, tmp_path, num_train=12, num_val=7, **KW)
    finally:
        unregister_datasets(names)
