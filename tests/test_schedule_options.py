"""train.reference_batch_size and train.epochs: a recipe on one GPU, or in epochs."""

import logging
from pathlib import Path

import pytest

from . import needs_detectron2

needs_detectron2()

from dyhead_d2.config import ConfigError, load_config  # noqa: E402
from dyhead_d2.engine import apply_schedule_options  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
R50 = str(ROOT / "configs/custom/atss_dyhead_R_50_caffe_FPN_1x.py")
DATA = [
    "dataset.train_json=t.json",
    "dataset.train_images=t",
    "dataset.val_json=v.json",
    "dataset.val_images=v",
]


def schedule(cfg):
    return dict(
        lr=cfg.optimizer.lr,
        max_iter=cfg.train.max_iter,
        milestones=list(cfg.lr_multiplier.scheduler.milestones),
        warmup=round(cfg.lr_multiplier.warmup_length * cfg.train.max_iter),
        eval_period=cfg.train.eval_period,
        checkpoint_period=cfg.train.checkpointer.period,
    )


def test_recipe_batch_changes_nothing():
    cfg = load_config(R50, DATA)
    before = schedule(cfg)
    assert cfg.train.reference_batch_size == 16
    assert apply_schedule_options(cfg) == {}
    assert schedule(cfg) == before


def test_one_gpu_of_four_images_scales_linearly(caplog):
    cfg = load_config(R50, [*DATA, "dataloader.train.total_batch_size=4"])
    with caplog.at_level(logging.INFO, logger="dyhead_d2"):
        apply_schedule_options(cfg)
    # 16 -> 4 images: LR / 4, every iteration count x 4 (the 1x recipe: 0.01, 90k, 60k / 80k,
    # 1000 warm-up, eval and checkpoint every 5000).
    assert schedule(cfg) == dict(
        lr=pytest.approx(0.0025),
        max_iter=360000,
        milestones=[240000, 320000, 360000],
        warmup=4000,
        eval_period=20000,
        checkpoint_period=20000,
    )
    (line,) = [r.getMessage() for r in caplog.records if "Schedule" in r.getMessage()]
    assert line.startswith("Schedule for a total batch of 4 (recipe: 16): optimizer.lr 0.01 -> ")
    assert (
        "train.max_iter 90000 -> 360000" in line and "lr steps [60000, 80000] -> [240000, 320000]"
    )


def test_epochs_set_the_length_and_keep_the_fractions():
    cfg = load_config(R50, [*DATA, "dataloader.train.total_batch_size=4", "train.epochs=12"])
    apply_schedule_options(cfg, num_train_images=lambda: 500)
    # 12 epochs of 500 images in batches of 4: 1500 iterations; steps at 2/3 and 8/9 of the run,
    # warm-up 1/90, eval and checkpoint every 1/18; LR scaled by the batch as above.
    assert schedule(cfg) == dict(
        lr=pytest.approx(0.0025),
        max_iter=1500,
        milestones=[1000, 1333, 1500],
        warmup=17,
        eval_period=83,
        checkpoint_period=83,
    )


def test_reference_zero_turns_scaling_off_and_bad_values_are_refused():
    cfg = load_config(
        R50, [*DATA, "dataloader.train.total_batch_size=4", "train.reference_batch_size=0"]
    )
    before = schedule(cfg)
    assert apply_schedule_options(cfg) == {}
    assert schedule(cfg) == before
    cfg = load_config(R50, [*DATA, "dataloader.train.total_batch_size=0"])
    with pytest.raises(ConfigError, match="total_batch_size"):
        apply_schedule_options(cfg)
