import math

from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


def multi_step_schedule(max_iter: int, steps: tuple[int, ...], warmup_iters: int = 1000):
    """LR x1, then x0.1 at each step, with a linear warm-up from x0.001 over ``warmup_iters``."""
    return L(WarmupParamScheduler)(
        scheduler=L(MultiStepParamScheduler)(
            values=[0.1**i for i in range(len(steps) + 1)],
            milestones=[*steps, max_iter],
        ),
        warmup_length=warmup_iters / max_iter,
        warmup_method="linear",
        warmup_factor=0.001,
    )


# Detectron2's 1x: 90k iterations of 16 images, x0.1 at 60k and 80k, 1000 warm-up iterations.
lr_multiplier_1x = multi_step_schedule(90000, (60000, 80000))


# MMDetection counts epochs: the 117,266 train2017 images with annotations in batches of 16
# (4 GPUs x 4 images), the last one partial, are 7,330 iterations.
COCO_ITERS_PER_EPOCH = math.ceil(117266 / 16)


def epoch_schedule(epochs: int, step_epochs: tuple[int, ...], warmup_iters: int = 500):
    """``(max_iter, lr_multiplier)`` of MMDetection's epoch-based step schedule on COCO at 16
    images per batch: x0.1 after each of ``step_epochs``, 500 warm-up iterations by default."""
    max_iter = epochs * COCO_ITERS_PER_EPOCH
    steps = tuple(e * COCO_ITERS_PER_EPOCH for e in step_epochs)
    return max_iter, multi_step_schedule(max_iter, steps, warmup_iters)
