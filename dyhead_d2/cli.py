"""What every command line in ``tools/`` shares: its parser, imports, errors and model.

A tool is a thin script over package functions, in the shape of Detectron2's ``tools/``:

    from dyhead_d2 import cli

    with cli.tool_imports("tools/demo.py"):
        from dyhead_d2.inference import Predictor

    def main(argv=None) -> int:
        args = parser.parse_args(argv)
        return cli.run(PROG, lambda: work(args))

This module imports neither torch nor detectron2 when it is imported (only :func:`run` and
:func:`build_model` do, when called), so the parts of the package that need only torch can use it.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ._detectron2 import require_detectron2

__all__ = [
    "ToolError",
    "add_overrides_argument",
    "build_model",
    "make_parser",
    "run",
    "tool_imports",
    "upstream_warnings_silenced",
]

# Raised inside fvcore and detectron2 on this torch version, not by this project.
_UPSTREAM_WARNINGS = (
    ("`torch.jit.script` is deprecated", FutureWarning),
    ("torch.meshgrid: in an upcoming release", UserWarning),
)


class ToolError(ValueError):
    """A mistake on a tool's command line (a file it cannot read, an option that does not fit);
    :func:`run` prints the message in one line and exits with status 2."""


@contextmanager
def upstream_warnings_silenced() -> Iterator[None]:
    """Hide the deprecation warnings that fvcore and detectron2 raise on this torch version,
    only for the duration of the block (the global filters are restored after it)."""
    with warnings.catch_warnings():
        for message, category in _UPSTREAM_WARNINGS:
            warnings.filterwarnings("ignore", message, category)
        yield


@contextmanager
def tool_imports(feature: str) -> Iterator[None]:
    """Around a tool's package imports: a clear error when detectron2 is missing, and none of the
    upstream warnings that importing it raises."""
    require_detectron2(feature)
    with upstream_warnings_silenced():
        yield


def make_parser(prog: str | None, doc: str, **kwargs) -> argparse.ArgumentParser:
    """A parser whose description is the first paragraph of the tool's docstring ``doc``."""
    return argparse.ArgumentParser(
        prog=prog,
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def add_overrides_argument(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """The trailing ``key=value`` overrides of the config (``opts``)."""
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help=help or "key=value overrides of the config, last"
    )


def run(
    prog: str,
    work: Callable[[], int | None],
    errors: tuple[type[Exception], ...] = (),
    log_format: str | None = None,
) -> int:
    """Run a tool's ``work()`` and return its exit status.

    Logging goes to stderr at WARNING (prefixed with ``prog`` unless ``log_format`` says
    otherwise); the upstream warnings are hidden while it runs. A mistake of the user
    (``ConfigError``, :class:`ToolError` or one of ``errors``) ends the run with one line
    ``PROG: error: ...`` on stderr and status 2, not a traceback.
    """
    logging.basicConfig(
        level=logging.WARNING, format=log_format or f"{prog}: %(levelname)s: %(message)s"
    )
    with upstream_warnings_silenced():
        from .config import ConfigError
    try:
        with upstream_warnings_silenced():
            status = work()
    except (ConfigError, ToolError, *errors) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0 if status is None else status


def build_model(cfg, overrides: list[str] | tuple[str, ...] = (), weights: bool = False):
    """The model of ``cfg`` (a loaded config, or a LazyConfig file loaded with ``overrides``).

    With ``weights``: on ``train.device`` ("auto": CUDA when available; the resolved device is
    written back to the config) in eval mode, with the weights of ``train.init_checkpoint`` (any
    checkpoint ``DyHeadCheckpointer`` reads). Without: its random initialisation on the CPU (for
    names and shapes).
    """
    from detectron2.config import instantiate

    from .checkpoint import DyHeadCheckpointer
    from .config import load_config, resolve_device

    if not hasattr(cfg, "model"):
        cfg = load_config(str(cfg), overrides)
    if not weights:
        return instantiate(cfg.model)
    cfg.train.device = resolve_device(cfg.train.get("device", "auto"))
    model = instantiate(cfg.model).to(cfg.train.device).eval()
    DyHeadCheckpointer(model).load(cfg.train.init_checkpoint)
    return model
