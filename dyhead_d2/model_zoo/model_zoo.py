"""Finding the project's configs: in an installed package or in a source checkout.

The configs live in the checkout's top-level ``configs/`` folder. A wheel installs that folder as
``dyhead_d2/model_zoo/configs`` (``pyproject.toml`` maps it there, as Detectron2's setup.py does
with ``detectron2/model_zoo/configs``); a checkout used in place (an editable install, or the
checkout on ``sys.path``) has it next to the package. Relative names are the same in both:
``"COCO/atss_dyhead_R_50_caffe_FPN_1x.py"``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["configs_root", "get_config", "get_config_file"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def configs_root() -> Path:
    """The folder holding the configs: the installed copy, else the checkout's ``configs/``."""
    for root in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parents[1] / "configs"):
        if (root / "common").is_dir():
            return root
    raise FileNotFoundError(
        f"no configs folder at {_PACKAGE_DIR / 'configs'} (an installed package) or "
        f"{_PACKAGE_DIR.parents[1] / 'configs'} (a checkout): reinstall dyhead_d2"
    )


def get_config_file(config_path: str) -> str:
    """The path of a project config, e.g. ``get_config_file("COCO/atss_dyhead_R_50_FPN_1x.py")``
    (a name relative to ``configs/``; a leading ``configs/`` is accepted too)."""
    relative = Path(config_path)
    if relative.parts[:1] == ("configs",):
        relative = Path(*relative.parts[1:])
    root = configs_root()
    path = (root / relative).resolve()
    if relative.is_absolute() or root.resolve() not in path.parents or not path.is_file():
        available = sorted(
            str(p.relative_to(root)) for p in root.glob("*/*.py") if p.parent.name != "common"
        )
        raise FileNotFoundError(
            f"{config_path!r} is not a config of this project; available: {', '.join(available)}"
        )
    return str(path)


def get_config(config_path: str, overrides: list[str] | tuple[str, ...] = ()):
    """A project config loaded with :func:`dyhead_d2.config.load_config` and ``key=value``
    ``overrides`` (needs detectron2)."""
    from ..config import load_config

    return load_config(get_config_file(config_path), overrides)
