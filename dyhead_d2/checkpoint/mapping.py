"""Strict renaming of a foreign state dict onto a model's state dict.

A source format is described by a function that says, for one checkpoint key, which model key it
fills (and how its value is reshaped) or why it is dropped. :func:`apply_key_map` runs it over the
whole checkpoint and refuses, listing every offending key at once, when a key has no rule, a rule
points at a key the model does not have, two keys fill the same model key, a shape differs, or a
required model key is left unfilled. A silently half-loaded detector evaluates to a plausible but
wrong AP; this makes that impossible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "CheckpointConversionError",
    "Conversion",
    "KeyMap",
    "apply_key_map",
    "conv1x1_to_linear",
    "drop",
    "scalar_to_vector",
]

logger = logging.getLogger(__name__)

_BN_COUNTER = ".num_batches_tracked"


@dataclass(frozen=True)
class KeyMap:
    """Where one checkpoint entry goes: model key ``target`` (after ``transform``), or, when
    ``target`` is None, nowhere, for the stated ``reason``."""

    target: str | None
    transform: Callable[[Tensor], Tensor] | None = None
    reason: str = ""


def drop(reason: str) -> KeyMap:
    """A checkpoint entry that is consumed on purpose without filling a model key."""
    return KeyMap(None, reason=reason)


def conv1x1_to_linear(t: Tensor) -> Tensor:
    """(O, I, 1, 1) 1x1-convolution weight -> (O, I) Linear weight; anything else unchanged
    (so the shape check reports it)."""
    if t.dim() == 4 and tuple(t.shape[2:]) == (1, 1):
        return t.reshape(t.shape[0], t.shape[1])
    return t


def scalar_to_vector(t: Tensor) -> Tensor:
    """() -> (1,): MMCV's ``Scale`` stores a 0-d parameter, ours a 1-element one."""
    return t.reshape(1) if t.dim() == 0 else t


class CheckpointConversionError(ValueError):
    """A checkpoint does not map onto the model; ``problems`` lists every offending key."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(
            f"cannot map the {source!r} checkpoint onto the model "
            f"({len(self.problems)} problems):\n{lines}"
        )


@dataclass
class Conversion:
    """The result of a conversion: a state dict in the model's names, and what happened to the
    entries that did not map one to one."""

    state_dict: dict[str, Tensor]
    source: str
    num_checkpoint_keys: int
    dropped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why
    filled: dict[str, str] = field(default_factory=dict)  # model key -> why (not from the file)
    left_unfilled: list[str] = field(default_factory=list)  # model keys it does not cover
    # model key -> (checkpoint shape, model shape) of entries passed on although their shapes
    # differ (only keys the caller allowed: class-dependent ones, for fine-tuning)
    shape_differs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def summary(self) -> str:
        """A few lines for a log or a terminal."""
        n_from_file = len(self.state_dict) - len(self.filled)
        lines = [
            f"{self.source}: {self.num_checkpoint_keys} checkpoint entries -> "
            f"{n_from_file} model entries, {len(self.dropped)} dropped on purpose, "
            f"{len(self.filled)} filled without a source, "
            f"{len(self.left_unfilled)} model entries not covered by this checkpoint"
        ]
        for reason, keys in _group(self.dropped).items():
            lines.append(f"  dropped {len(keys)} ({reason}): {_preview(keys)}")
        for reason, keys in _group(self.filled).items():
            lines.append(f"  filled {len(keys)} ({reason}): {_preview(keys)}")
        if self.left_unfilled:
            lines.append(f"  not covered: {_preview(self.left_unfilled)}")
        return "\n".join(lines)


def _group(reasons: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, reason in reasons.items():
        out.setdefault(reason, []).append(key)
    return out


def _preview(keys: list[str], n: int = 3) -> str:
    more = f", ... ({len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def apply_key_map(
    state_dict: Mapping[str, Tensor],
    model_state: Mapping[str, Tensor],
    key_map: Callable[[str], KeyMap | None],
    *,
    source: str,
    required: Callable[[str], bool] = lambda key: True,
    shape_may_differ: Callable[[str], bool] = lambda key: False,
) -> Conversion:
    """Rename ``state_dict`` into the keys of ``model_state`` with ``key_map``; strict.

    Args:
        state_dict: the checkpoint's entries (tensors).
        model_state: the target model's ``state_dict()`` (only names and shapes are read).
        key_map: checkpoint key -> :class:`KeyMap`, or None for a key the format does not know.
        source: the format's name, for messages.
        required: whether a model key must be filled by this checkpoint. A detector checkpoint
            fills every key; a backbone checkpoint only the backbone's.
        shape_may_differ: model keys whose shape may differ: such entries are passed on with
            the checkpoint's shape and listed in ``Conversion.shape_differs`` for the caller to
            handle (the class-dependent tensors, when fine-tuning to other classes).

    BatchNorm batch counters (``num_batches_tracked``) carry no behaviour in a detector, whose
    statistics are frozen; they are dropped when the model's norm has none (Detectron2's
    ``FrozenBN``) and set to 0 when the model's norm has one but the checkpoint does not.

    Raises:
        CheckpointConversionError: listing every problem found, not only the first.
    """
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}  # model key -> the checkpoint key that claimed it
    conversion = Conversion(out, source, len(state_dict))
    unknown, absent, clashes, shapes = [], [], [], []
    for key, value in state_dict.items():
        m = key_map(key)
        if m is None:
            unknown.append(key)
            continue
        if m.target is None:
            conversion.dropped[key] = m.reason
            continue
        if m.target not in model_state:
            if key.endswith(_BN_COUNTER) and _sibling(m.target, "running_mean") in model_state:
                conversion.dropped[key] = "batch counter of a norm the model keeps frozen"
            else:
                absent.append(f"{key} -> {m.target}")
            continue
        if m.target in origin:
            clashes.append(f"{origin[m.target]} and {key} -> {m.target}")
            continue
        origin[m.target] = key
        value = torch.as_tensor(value)
        if m.transform is not None:
            value = m.transform(value)
        want = tuple(model_state[m.target].shape)
        if tuple(value.shape) != want and shape_may_differ(m.target):
            conversion.shape_differs[m.target] = (tuple(value.shape), want)
        elif tuple(value.shape) != want:
            shapes.append(f"{key} -> {m.target}: checkpoint {tuple(value.shape)}, model {want}")
            continue
        out[m.target] = value

    unfilled = []
    for key, value in model_state.items():
        if key in origin:  # filled, or already reported with its checkpoint key
            continue
        if key.endswith(_BN_COUNTER) and _sibling(key, "running_mean") in out:
            out[key] = torch.zeros_like(value, device="cpu")
            conversion.filled[key] = "BatchNorm batch counter the checkpoint does not store"
        elif required(key):
            unfilled.append(key)
        else:
            conversion.left_unfilled.append(key)

    problems = (
        [f"no rule for checkpoint key {k}" for k in unknown]
        + [f"model has no key for {k}" for k in absent]
        + [f"two checkpoint keys for one model key: {k}" for k in clashes]
        + [f"shape mismatch: {k}" for k in shapes]
        + [f"model key not filled by the checkpoint: {k}" for k in unfilled]
    )
    if problems:
        raise CheckpointConversionError(source, problems)
    return conversion


def _sibling(key: str, name: str) -> str:
    return key.rsplit(".", 1)[0] + "." + name
