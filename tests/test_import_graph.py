"""The package's layers import each other in one direction: read from the source (ast), so that an
import inside a function counts as much as one at the top, and checked in fresh interpreters."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from . import needs_detectron2

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dyhead_d2"

# What may import dyhead_d2.engine (training only): itself, train_net.py and the GPU check, which
# runs Detectron2's trainer as train_net.py builds it.
ENGINE_USERS = (
    "dyhead_d2.engine",
    "dyhead_d2.benchmark.device_check",
    "dyhead_d2.benchmark.gpu_check",
    "train_net",
)


def module_name(path: Path) -> str:
    """``dyhead_d2/a/b.py`` -> ``dyhead_d2.a.b``; a package's ``__init__.py`` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def scripts() -> dict[str, Path]:
    """train_net.py and the tools, named by their file (they are run, not imported)."""
    found = {"train_net": ROOT / "train_net.py"}
    found.update({f"tools.{p.stem}": p for p in sorted((ROOT / "tools").glob("*.py"))})
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The dyhead_d2 modules ``path`` (module ``name``) imports, anywhere in its code; ``from
    pkg import sub`` counts ``pkg.sub`` when that is a module."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(t for t in targets if t in known)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    known = set(modules)
    every = {**modules, **scripts()}
    return {name: imported_modules(name, path, known) for name, path in every.items()}


def within(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.fixture(scope="module")
def graph():
    g = import_graph()
    # The walk sees imports: known edges of each kind (top-level, relative, inside a function).
    assert "dyhead_d2.engine.train_utils" in g["dyhead_d2.engine"]
    assert "dyhead_d2.config" in g["train_net"]
    assert "dyhead_d2.engine" in g["train_net"]
    assert "dyhead_d2.inference.predictor" in g["dyhead_d2.deploy.export"]
    assert "dyhead_d2.benchmark.deployed" in g["dyhead_d2.benchmark.runner"]  # in a function
    return g


def test_engine_is_imported_only_by_training(graph):
    offenders = {
        name: sorted(m for m in imports if within(m, ["dyhead_d2.engine"]))
        for name, imports in graph.items()
        if not within(name, ENGINE_USERS)
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"dyhead_d2.engine is for training only; imported by {offenders}"


def test_inference_does_not_import_deploy(graph):
    """deploy builds on inference (the exporter runs the Predictor), never the other way."""
    offenders = {
        name: sorted(m for m in imports if within(m, ["dyhead_d2.deploy"]))
        for name, imports in graph.items()
        if within(name, ["dyhead_d2.inference"])
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"inference imports deploy: {offenders}"
    assert "dyhead_d2.inference.inputs" in graph["dyhead_d2.deploy.onnx_model"]


@pytest.fixture(scope="module")
def loaded_modules() -> dict[str, list[str]]:
    """In one fresh interpreter: the trainer modules loaded after importing dyhead_d2.config, then
    the engine modules loaded after importing every module outside training as well."""
    needs_detectron2()
    names = [n for n in package_modules() if not within(n, ENGINE_USERS)]
    code = f"""
import importlib, json, sys
def loaded(prefixes):
    return sorted(m for m in sys.modules if m.startswith(prefixes))
from dyhead_d2.config import ConfigError, load_config, resolve_device
assert "detectron2.config" in sys.modules
out = {{"config": loaded(("dyhead_d2.engine", "detectron2.engine"))}}
for name in {names!r}:
    importlib.import_module(name)
out["all"] = loaded("dyhead_d2.engine")
out["imported"] = {len(names)}
print(json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_config_layer_loads_no_trainer(loaded_modules):
    assert loaded_modules["config"] == []


def test_no_module_outside_training_loads_the_engine(loaded_modules):
    """Every other module of the package, imported in one process, loads no engine module (the
    ast rule above, followed through every import chain)."""
    assert loaded_modules["imported"] > 50
    assert loaded_modules["all"] == []
