"""train_net.py with a NaN put into the model during training, to test how divergence ends.

    python -m tests.nan_train_net NAME ITERATION WHEN RANK [train_net.py arguments...]

At iteration ITERATION, on rank RANK ("all" for every rank):

* WHEN "before_step" / "after_step": the model parameter NAME (as in the checkpoint's "model")
  becomes NaN in that hook of the trainer. The hook is registered first, so in ``after_step``
  the NaN is there before the periodic checkpointer runs; in ``before_step`` the iteration's
  forward sees it.
* WHEN "output": the module NAME returns a NaN in that iteration's forward (its parameters stay
  finite), as when float16 activations overflow on one rank's images.

Everything else is train_net.py unchanged. The hook is installed in every training process,
also in those Detectron2's ``launch`` spawns (they receive it through the environment).
"""

from __future__ import annotations

import os
import sys

import torch
from detectron2.engine import HookBase, SimpleTrainer
from detectron2.utils import comm

import train_net

_ENV = "DYHEAD_D2_TEST_NAN"


class SetNaN(HookBase):
    def __init__(self, name: str, iteration: int, when: str, rank: str):
        self.name, self.iteration, self.when, self.rank = name, iteration, when, rank

    def _model(self):
        model = self.trainer.model
        model = getattr(model, "module", model)  # DDP
        return getattr(model, "model", model)  # AutocastForward

    def _here(self) -> bool:
        return self.trainer.iter == self.iteration and self.rank in ("all", str(comm.get_rank()))

    def _poison(self, when: str) -> None:
        if when != self.when or not self._here():
            return
        with torch.no_grad():
            dict(self._model().named_parameters())[self.name].view(-1)[0] = float("nan")

    def before_train(self):
        if self.when != "output":
            return

        def output_hook(module, args, out):
            if self._here():
                out = out.clone()
                out.view(-1)[0] = float("nan")
            return out

        dict(self._model().named_modules())[self.name].register_forward_hook(output_hook)

    def before_step(self):
        self._poison("before_step")

    def after_step(self):
        self._poison("after_step")


def main_with_nan(args) -> None:
    """train_net.main with :class:`SetNaN` registered first; what ``launch`` runs."""
    name, iteration, when, rank = os.environ[_ENV].split(",")
    register = SimpleTrainer.register_hooks

    def register_first(self, hooks):
        register(self, [SetNaN(name, int(iteration), when, rank), *hooks])

    SimpleTrainer.register_hooks = register_first
    return _train_net_main(args)


_train_net_main = train_net.main


def main() -> None:
    name, iteration, when, rank, *rest = sys.argv[1:]
    os.environ[_ENV] = ",".join([name, iteration, when, rank])
    # invoke_main launches train_net.main by its module-level name; spawned workers unpickle
    # this module's main_with_nan instead, which installs the hook in each of them.
    train_net.main = main_with_nan
    sys.argv = ["train_net.py", *rest]
    train_net.invoke_main()


if __name__ == "__main__":
    main()
