"""Your own data, end to end, with the README's commands: a COCO-format dataset of two classes
under ids 7 and 42 (other shapes in the pictures unlabelled, images without objects, one box
partly outside its image and one of zero area), fine-tuned with configs/custom/atss_dyhead_small.py
from a 5-class quickstart checkpoint, then evaluated again with --eval-only."""

import json
import math
import re
import time

import pytest
import torch

from . import needs_detectron2

needs_detectron2()

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402

from dyhead_d2.checkpoint import DyHeadCheckpointer  # noqa: E402
from dyhead_d2.config import load_config  # noqa: E402

from .custom_data import write_custom_split  # noqa: E402
from .tiny_quickstart import QUICKSTART, ROOT, TINY, printed_ap, run_train_net  # noqa: E402

SMALL = "configs/custom/atss_dyhead_small.py"
EPOCHS = 8
NUM_TRAIN = 100
# bbox AP (in %) the fine-tuned model must reach on the val split (docs/custom_data.md gives what a
# run reaches).
MIN_AP = 2.0
# The quickstart on 16 images for 4 iterations: its model as configured (TINY's one DyHead block
# would not be the model configs/custom/atss_dyhead_small.py builds).
QUICK = [o for o in TINY if not o.startswith("model.")]
CLASS_KEYS = {"head.cls_logits.weight", "head.cls_logits.bias"}


def add_bad_boxes(json_file):
    """One box sticking out of its image (clipped) and one of zero width (dropped)."""
    data = json.loads(json_file.read_text())
    img = data["images"][0]
    data["annotations"] += [
        {"id": 1, "image_id": img["id"], "category_id": 7, "bbox": [-10, 20, 40, 30], "area": 1},
        {"id": 2, "image_id": img["id"], "category_id": 42, "bbox": [5, 5, 0, 9], "area": 0},
    ]
    json_file.write_text(json.dumps(data))


def on_both_cores(args, tmp_path):
    """train_net.py as a user runs it, on both cores."""
    return run_train_net(args, tmp_path, timeout=900, threads=2)


@pytest.mark.slow
def test_fine_tune_to_own_data_and_evaluate(tmp_path):
    start = time.time()
    data = tmp_path / "data"
    train_json, train_images = write_custom_split(data, "train", NUM_TRAIN)
    val_json, val_images = write_custom_split(data, "val", 40, seed=2)
    add_bad_boxes(train_json)

    # A 5-class quickstart checkpoint, from a tiny training run.
    quick = tmp_path / "quickstart"
    run = on_both_cores(
        ["--config-file", QUICKSTART, *QUICK, "train.max_iter=4", f"train.output_dir={quick}"],
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    source = quick / "model_final.pth"

    dataset = [
        f"dataset.train_json={train_json}",
        f"dataset.train_images={train_images}",
        f"dataset.val_json={val_json}",
        f"dataset.val_images={val_images}",
        # The generated images are 128 px: keep them so (the config resizes to 320).
        "dataloader.train.mapper.augmentations.0.short_edge_length=[128]",
        "dataloader.test.mapper.augmentations.0.short_edge_length=128",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
    ]
    out = tmp_path / "custom"
    train = on_both_cores(
        [
            "--config-file",
            SMALL,
            *dataset,
            f"train.init_checkpoint={source}",
            f"train.epochs={EPOCHS}",
            f"train.output_dir={out}",
        ],
        tmp_path,
    )
    log = train.stdout + train.stderr
    assert train.returncode == 0, log[-3000:]
    trained_ap = printed_ap(log)

    # Loading: the classifier skipped (one line each), nothing else missing or mismatched.
    skipped = re.findall(r"Not loading (\S+): ATSS classifier", log)
    assert sorted(skipped) == sorted(CLASS_KEYS)
    assert "(5, 64, 1, 1), model (2, 64, 1, 1)" in log
    assert "not found in the checkpoint" not in log and "incompatible shapes" not in log
    # The data: one line per split with the clipping counts; the epoch schedule.
    assert re.search(r"clipped 1 boxes partly outside their image, dropped 1 boxes of zero", log)
    iters = math.ceil(EPOCHS * NUM_TRAIN / 8)
    assert f"train.max_iter 1000 -> {iters}" in log

    # What train_net loaded: the same checkpointer on the same config's model, checked tensor by
    # tensor against the 5-class checkpoint.
    cfg = load_config(str(ROOT / SMALL), dataset)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    DyHeadCheckpointer(model, allow_new_classes=True).load(str(source))
    five = torch.load(source, map_location="cpu", weights_only=False)["model"]
    loaded = model.state_dict()
    for key, value in loaded.items():
        if key in CLASS_KEYS:
            assert torch.equal(value, fresh[key]), key
        else:
            assert torch.equal(value, five[key]), key
    assert any(k.startswith("backbone.dyhead.") for k in loaded)
    assert any(k.startswith("backbone.fpn.bottom_up.") for k in loaded)
    assert loaded["head.cls_logits.weight"].shape[0] == 2
    assert torch.allclose(loaded["head.cls_logits.bias"], torch.full((2,), -math.log(99)))
    # ... and training went on from there: the fine-tuned classifier has the new shape.
    tuned = DetectionCheckpointer(instantiate(cfg.model))
    tuned.load(str(out / "model_final.pth"))
    assert tuned.model.head.cls_logits.weight.shape[0] == 2

    assert float(trained_ap["AP"]) >= MIN_AP, trained_ap

    # --eval-only on the final checkpoint: the same AP, results in the dataset's category ids.
    evaluate = on_both_cores(
        [
            "--config-file",
            SMALL,
            "--eval-only",
            *dataset,
            f"train.init_checkpoint={out / 'model_final.pth'}",
            f"train.output_dir={tmp_path / 'eval'}",
        ],
        tmp_path,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert printed_ap(evaluate.stdout + evaluate.stderr) == trained_ap
    results = json.loads((tmp_path / "eval/inference/coco_instances_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {7, 42}
    assert "| circle" in evaluate.stdout + evaluate.stderr  # per-class table by name
    print(f"end to end: AP {trained_ap['AP']} in {time.time() - start:.0f} s")
