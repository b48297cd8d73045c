"""Timing and peak memory of callables on CPU or CUDA: the one harness of the benchmarks.

:func:`compare` times several implementations interleaved (``tools/benchmark.py``);
:func:`measure` times one, with the absolute CUDA peak (``tools/gpu_check.py``).
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = [
    "Measured",
    "PeakMemory",
    "Timing",
    "compare",
    "format_mib",
    "max_abs_diff",
    "measure",
    "sync",
]


class PeakMemory:
    """Peak memory above the level at ``start()``, in bytes (None where it cannot be measured)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.base = 0

    @staticmethod
    def _status_kib(key: str) -> int:
        with open("/proc/self/status") as f:
            return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1))

    def start(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current resident size
            self.base = self._status_kib("VmRSS") * 1024
        except OSError:
            self.base = None

    def stop(self) -> int | None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - self.base
        if self.base is None:
            return None
        return self._status_kib("VmHWM") * 1024 - self.base


def sync(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a timer reads its end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # process CPU time, all threads
    peak: int | None = None
    saved: int | None = None  # bytes kept by autograd for the backward, where measured

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_seconds)


def compare(
    runs: dict[str, Callable[[], object]], device: torch.device, repeats: int, warmup: int
) -> dict[str, Timing]:
    """Time each callable; runs are interleaved, the order alternating between rounds."""
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    timings = {name: Timing() for name in names}
    mem = PeakMemory(device)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            mem.start()
            c0, t0 = time.process_time(), time.perf_counter()
            runs[name]()
            sync(device)
            timings[name].seconds.append(time.perf_counter() - t0)
            timings[name].cpu_seconds.append(time.process_time() - c0)
            peak = mem.stop()
            if peak is not None:
                old = timings[name].peak
                timings[name].peak = peak if old is None else max(old, peak)
    return timings


@dataclass
class Measured:
    seconds: float  # median over the timed repeats
    peak_bytes: int | None  # torch.cuda.max_memory_allocated over them; None on other devices
    note: str = ""


def measure(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int) -> Measured:
    """Median wall time of ``fn()`` after ``warmup`` untimed calls, and the absolute peak of
    allocated device memory during the timed calls (what is resident counts: weights, optimizer
    state), as MMDetection's logger reports it."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Measured(statistics.median(times), peak)


def max_abs_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> tuple[float, float]:
    """Largest |a - b| over paired tensors, and the largest of |a - b| / max|b| per tensor."""
    diff = rel = 0.0
    for x, y in zip(a, b):
        d = (x.double() - y.double()).abs().max().item()
        diff = max(diff, d)
        rel = max(rel, d / max(y.double().abs().max().item(), 1e-30))
    return diff, rel


def format_mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"
