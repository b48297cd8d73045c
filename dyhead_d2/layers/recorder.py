"""Recording what the blocks of a :class:`~dyhead_d2.DyHead` compute, with forward hooks.

:class:`DyHeadRecorder` attaches hooks to each block's ``offset_conv``, ``scale_attn`` and
``task_attn`` while it is active and detaches them on exit; the hooks copy values and return
nothing, so outputs and gradients are exactly those of the model without it, on both forward
paths. It relies on the order in which a block calls these modules, which both paths
(:meth:`~dyhead_d2.layers.dyhead.DyHeadBlock.forward_per_level` and
:meth:`~dyhead_d2.layers.dyhead.DyHeadBlock.forward_sampled`) share, and checks it after every
block call:

* ``offset_conv`` once per level, in level order (from ``offset_and_mask``);
* ``scale_attn`` once per branch of each level, levels in order, branches ``mid``, ``low``
  (levels 1..), ``high`` (levels ..L-2);
* ``task_attn`` once per level, in level order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .dyhead import split_offset_and_mask

__all__ = ["BlockRecord", "DyHeadRecorder", "branch_names"]


def branch_names(level: int, num_levels: int) -> list[str]:
    """The branches level ``level`` of ``num_levels`` fuses, in the order the block runs them."""
    names = ["mid"]
    if level > 0:
        names.append("low")
    if level < num_levels - 1:
        names.append("high")
    return names


@dataclass
class BlockRecord:
    """What one block computed in its last call, per level (lists indexed by level).

    * ``offset[l]``: (N, 18, H_l, W_l) sampling offsets, (dy, dx) of tap ``k`` in channels
      ``2k, 2k+1`` (taps row-major over the 3x3 kernel), in level-``l`` pixels;
    * ``mask[l]``: (N, 9, H_l, W_l) modulation scalars (after the sigmoid);
    * ``scale[l]``: branch name -> (N,) scale-aware attention weights;
    * ``dyrelu[l]``: ``(a1, b1, a2, b2)``, each (N, C), the task-aware DyReLU coefficients.

    Values are detached float32 copies on the CPU.
    """

    offset: list[Tensor] = field(default_factory=list)
    mask: list[Tensor] = field(default_factory=list)
    scale: list[dict[str, Tensor]] = field(default_factory=list)
    dyrelu: list[tuple[Tensor, Tensor, Tensor, Tensor]] = field(default_factory=list)

    @property
    def num_levels(self) -> int:
        return len(self.offset)


def _copy(t: Tensor) -> Tensor:
    return t.detach().float().cpu().clone()


class DyHeadRecorder:
    """Context manager recording every block of ``dyhead`` (a :class:`DyHead` or a list of
    blocks) during the forward passes run inside it; :attr:`blocks` holds, per block, a
    :class:`BlockRecord` of its last call::

        with DyHeadRecorder(model.backbone.dyhead) as rec:
            model(inputs)
        rec.blocks[0].scale[2]["low"]  # block 0, level 2, weight of the low branch
    """

    def __init__(self, dyhead):
        blocks = dyhead.blocks if hasattr(dyhead, "blocks") else dyhead
        self._blocks: list[nn.Module] = list(blocks)
        self.blocks: list[BlockRecord] = [BlockRecord() for _ in self._blocks]
        self._handles = []
        self._pending: list[dict] = []

    def __enter__(self) -> DyHeadRecorder:
        for i, block in enumerate(self._blocks):
            self._pending.append({"offset": [], "scale": [], "dyrelu": []})
            hooks = [
                block.register_forward_pre_hook(self._start(i)),
                block.offset_conv.register_forward_hook(self._on_offset(i)),
                block.scale_attn.register_forward_hook(self._on_scale(i)),
                block.task_attn.register_forward_hook(self._on_task(i)),
                block.register_forward_hook(self._finish(i)),
            ]
            self._handles.extend(hooks)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._pending.clear()

    def _start(self, i):
        def hook(module, args):
            self._pending[i] = {"offset": [], "scale": [], "dyrelu": []}

        return hook

    def _on_offset(self, i):
        def hook(module, args, out):
            self._pending[i]["offset"].append(_copy(out))

        return hook

    def _on_scale(self, i):
        def hook(module, args, out):
            self._pending[i]["scale"].append(_copy(out).flatten())

        return hook

    def _on_task(self, i):
        def hook(module, args, out):
            # DyReLU computes its coefficients inside forward; recompute them from its input,
            # the same function of the same tensor (no gradient, nothing stored in the graph).
            with torch.no_grad():
                coefficients = module.coefficients(args[0])
            self._pending[i]["dyrelu"].append(tuple(_copy(c).flatten(1) for c in coefficients))

        return hook

    def _finish(self, i):
        def hook(module, args, out):
            pending = self._pending[i]
            num_levels = len(out)
            names = [branch_names(level, num_levels) for level in range(num_levels)]
            calls = {k: len(v) for k, v in pending.items()}
            want = {"offset": num_levels, "scale": sum(map(len, names)), "dyrelu": num_levels}
            if calls != want:
                raise RuntimeError(
                    f"DyHeadRecorder: block {i} called offset_conv, scale_attn and task_attn "
                    f"{calls} times for {num_levels} levels, expected {want}; the block's "
                    "forward no longer runs them in the order this recorder relies on"
                )
            scales = iter(pending["scale"])
            offsets, masks = zip(*map(split_offset_and_mask, pending["offset"]))
            self.blocks[i] = BlockRecord(
                offset=list(offsets),
                mask=list(masks),
                scale=[{name: next(scales) for name in level} for level in names],
                dyrelu=pending["dyrelu"],
            )

        return hook
