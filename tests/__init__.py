"""Test package. ``needs_detectron2`` is how a test module asks for detectron2.

Where detectron2 is absent a test that needs it is skipped, with the reason, so that the model
math (``dyhead_d2.layers``, ``dyhead_d2.atss``) can be tested anywhere. CI sets
``DYHEAD_D2_REQUIRE_DETECTRON2=1``: there a missing detectron2 fails the run instead, so the
Detectron2 half of the project can never pass CI untested.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE_DETECTRON2 = "DYHEAD_D2_REQUIRE_DETECTRON2"


def needs_detectron2() -> ModuleType:
    """Import detectron2; skip the caller without it, or fail where CI requires it."""
    if os.environ.get(REQUIRE_DETECTRON2, "") not in ("", "0"):
        try:
            return importlib.import_module("detectron2")
        except ImportError as e:
            pytest.fail(
                f"{REQUIRE_DETECTRON2} is set but detectron2 cannot be imported: {e}",
                pytrace=False,
            )
    return pytest.importorskip(
        "detectron2", reason="detectron2 is not installed (not on PyPI; see README)"
    )
