"""The arithmetic of a training run: float16 AMP on CUDA, bfloat16 autocast on CPU where it pays.

On CPU, bfloat16 autocast is only faster when the processor computes bfloat16 natively
(AVX512-BF16 or AMX). Elsewhere (an AVX2-only x86, most ARM) PyTorch emulates it, and the
quickstart ran ten times slower than in float32 on such a machine. So it is decided per machine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Precision", "choose_precision", "cpu_has_native_bfloat16"]

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of the x86 extensions that compute bfloat16 in hardware.
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bfloat16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Asks PyTorch's own CPU feature detection; where that is unavailable, reads the flags of
    ``cpuinfo`` (Linux). Anything it cannot tell counts as "no": float32 is never the slow choice.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if all(hasattr(torch.cpu, p) for p in probes):
        return any(getattr(torch.cpu, p)() for p in probes)
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split()}
    return any(f in flags for f in _NATIVE_BF16_FLAGS)


@dataclass(frozen=True)
class Precision:
    """The decision: ``mode`` is "float32", "cuda_float16" (Detectron2's AMPTrainer) or
    "cpu_bfloat16" (autocast around the forward); ``reason`` is the one line that is logged, and
    ``warn`` whether it is a warning (the user asked for something this CPU will not do)."""

    mode: str
    reason: str
    warn: bool = False


def choose_precision(
    device: str,
    amp_enabled: bool,
    cpu_bfloat16: bool | str = "auto",
    native_bfloat16: bool | None = None,
) -> Precision:
    """Decide the arithmetic of a run from the config's ``train.amp`` and the machine, and log
    the decision in one line (``Precision: ...``): a warning when mixed precision was asked for
    and is not used, an info line otherwise.

    Args:
        device: the resolved ``train.device`` ("cpu", "cuda", "cuda:1", ...).
        amp_enabled: ``train.amp.enabled``, the key Detectron2's tools read (AMPTrainer on CUDA).
            On CPU it counts as an explicit request for bfloat16 autocast.
        cpu_bfloat16: ``train.amp.cpu_bfloat16``: "auto" uses bfloat16 autocast on a CPU that
            computes it natively, ``True`` asks for it explicitly (a warning where the CPU lacks
            it), ``False`` keeps float32 (a warning if ``amp_enabled`` asked for mixed
            precision).
        native_bfloat16: whether the CPU computes bfloat16 natively; default: detect it.
    """
    precision = _decide(device, amp_enabled, cpu_bfloat16, native_bfloat16)
    (logger.warning if precision.warn else logger.info)(f"Precision: {precision.reason}")
    return precision


def _decide(
    device: str, amp_enabled: bool, cpu_bfloat16: bool | str, native_bfloat16: bool | None
) -> Precision:
    if cpu_bfloat16 not in ("auto", True, False):
        raise ValueError(
            f"train.amp.cpu_bfloat16 must be 'auto', True or False, got {cpu_bfloat16!r}"
        )
    if not device.startswith("cpu"):
        if amp_enabled:
            return Precision("cuda_float16", f"float16 AMP with gradient scaling on {device}")
        return Precision("float32", f"float32 on {device} (train.amp.enabled=False)")
    if cpu_bfloat16 is False:
        if amp_enabled:
            return Precision(
                "float32",
                "float32 on CPU although mixed precision was asked for (train.amp.enabled=True): "
                "train.amp.cpu_bfloat16=False keeps the CPU in float32; set "
                "train.amp.cpu_bfloat16=auto for bfloat16 autocast where the CPU computes it "
                "natively",
                warn=True,
            )
        return Precision("float32", "float32 on CPU: train.amp.cpu_bfloat16=False")
    if native_bfloat16 is None:
        native_bfloat16 = cpu_has_native_bfloat16()
    if native_bfloat16:
        return Precision("cpu_bfloat16", "bfloat16 autocast on CPU: it computes bfloat16 natively")
    asked = amp_enabled or cpu_bfloat16 is True
    if asked:
        return Precision(
            "float32",
            "float32 on CPU although mixed precision was asked for: this CPU has no native "
            "bfloat16 (AVX512-BF16 or AMX), so autocast would emulate it and run several times "
            "slower",
            warn=True,
        )
    return Precision("float32", "float32 on CPU: it has no native bfloat16 (AVX512-BF16 or AMX)")
