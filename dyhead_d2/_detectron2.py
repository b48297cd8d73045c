"""The one place that explains how to get detectron2 when a part of dyhead_d2 needs it."""

from __future__ import annotations

INSTALL_HINT = (
    "detectron2 is not on PyPI; install it from source after PyTorch, as its authors describe: "
    "python -m pip install --no-build-isolation "
    "'git+https://github.com/facebookresearch/detectron2.git' (its build imports the installed "
    "torch, which pip's isolated build environment lacks; see "
    "https://detectron2.readthedocs.io/en/latest/tutorials/install.html). "
    "dyhead_d2.layers and dyhead_d2.atss work without it."
)


def require_detectron2(feature: str) -> None:
    """Raise an ImportError that says how to install detectron2 unless it can be imported."""
    try:
        import detectron2  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"{feature} needs detectron2, which is not installed. {INSTALL_HINT}"
        ) from e
