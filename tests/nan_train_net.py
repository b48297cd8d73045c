"""train_net.py with one parameter set to NaN during training, to test how divergence ends.

    python -m tests.nan_train_net PARAM ITERATION HOOK [train_net.py arguments...]

sets the model parameter named PARAM (as in the checkpoint's "model") to NaN in the ``HOOK``
("before_step" or "after_step") of iteration ITERATION. The hook is registered first, so in
``after_step`` the NaN is there before the periodic checkpointer runs; in ``before_step`` the
iteration's forward sees it. Everything else is train_net.py unchanged.
"""

from __future__ import annotations

import sys

import torch
from detectron2.engine import HookBase, SimpleTrainer

import train_net


class SetNaN(HookBase):
    def __init__(self, param: str, iteration: int, when: str):
        self.param, self.iteration, self.when = param, iteration, when

    def _poison(self, when: str) -> None:
        if when != self.when or self.trainer.iter != self.iteration:
            return
        model = self.trainer.model
        model = getattr(model, "module", model)  # DDP
        model = getattr(model, "model", model)  # AutocastForward
        with torch.no_grad():
            dict(model.named_parameters())[self.param].view(-1)[0] = float("nan")

    def before_step(self):
        self._poison("before_step")

    def after_step(self):
        self._poison("after_step")


def main() -> None:
    param, iteration, when, *rest = sys.argv[1:]
    register = SimpleTrainer.register_hooks

    def register_first(self, hooks):
        register(self, [SetNaN(param, int(iteration), when), *hooks])

    SimpleTrainer.register_hooks = register_first
    sys.argv = ["train_net.py", *rest]
    train_net.invoke_main()


if __name__ == "__main__":
    main()
