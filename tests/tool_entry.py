"""The command-line entry of a script in tools/, for the tests of the command lines themselves
(exit status, what is printed): ``load_tool("demo").main([...])`` runs it in this process.
Tests of what the tools compute import the package functions instead."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def tool_path(name: str) -> Path:
    return TOOLS / f"{name}.py"


def load_tool(name: str) -> ModuleType:
    """``tools/NAME.py`` as a module (not run as ``__main__``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_tool", tool_path(name))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module
