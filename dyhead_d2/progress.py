"""Progress of long work: a tqdm bar on a terminal, log lines otherwise.

Long work (writing a synthetic dataset, reading a large checkpoint, tracing a model for export,
a benchmark) must not look like a frozen program. :func:`progress` wraps a loop: on a terminal
(stderr is a TTY) it draws a tqdm bar; elsewhere (a log file, CI, a pipe) it logs a line at every
tenth of the work and at least every ``PERIOD`` seconds, and one when done. :func:`step` logs one
line before a long step that has no parts to count. Both log on the ``dyhead_d2.progress``
logger at INFO; :func:`progress_lines` shows that logger's lines on stderr where nothing else
configures logging yet (the tools, ``train_net.py``'s checks before Detectron2's logger starts).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm import tqdm

__all__ = ["LOGGER_NAME", "PERIOD", "progress", "progress_lines", "step"]

LOGGER_NAME = "dyhead_d2.progress"
# Longest wait between two log lines of one loop, in seconds.
PERIOD = 30.0

T = TypeVar("T")
logger = logging.getLogger(LOGGER_NAME)


def _on_terminal() -> bool:
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(
    iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it"
) -> Iterator[T]:
    """Yield the items of ``iterable``, showing how far it got: a tqdm bar on a terminal, else a
    log line ``DESC: N/TOTAL UNIT (P%)`` at each tenth of ``total`` (or every :data:`PERIOD`
    seconds, whichever comes first) and ``DESC: N UNIT done in S s`` at the end."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if _on_terminal():
        yield from tqdm(iterable, total=total, desc=desc, unit=unit)
        return
    start = last = time.monotonic()
    step_size = max(1, math.ceil(total / 10)) if total else None
    done = 0
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        at_step = step_size is not None and done % step_size == 0 and done != total
        if at_step or now - last >= PERIOD:
            if total:
                logger.info(f"{desc}: {done}/{total} {unit} ({100 * done // total}%)")
            else:
                logger.info(f"{desc}: {done} {unit}")
            last = now
    logger.info(f"{desc}: {done} {unit} done in {time.monotonic() - start:.1f} s")


def step(message: str) -> None:
    """One line before a long step that has no parts to count (e.g. tracing a model)."""
    logger.info(message)


@contextmanager
def progress_lines(prefix: str = "") -> Iterator[None]:
    """Within it, the progress lines go to stderr (``[time] PREFIX message``), unless a handler
    of this process shows them already (then nothing changes)."""
    if logger.hasHandlers() and logger.getEffectiveLevel() <= logging.INFO:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[%(asctime)s] {prefix}%(message)s", "%H:%M:%S"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
