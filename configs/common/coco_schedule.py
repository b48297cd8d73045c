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
