"""The tests share code the pytest way: fixtures in conftest.py and helper modules, never another
test module's names; and they test the package through its public names, never by patching its
private functions. Read from the source (ast)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PATCHERS = {"setattr", "delattr", "patch", "patch.object"}


def suite_modules() -> list[Path]:
    return sorted(TESTS.glob("test_*.py"))


def imports_of(tree: ast.Module) -> list[str]:
    """Every imported module of a test module, relative ones as ``tests.<name>``."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "tests" if node.level else ""
            module = ".".join(p for p in (base, node.module or "") if p)
            out.append(module)
            out += [f"{module}.{alias.name}" for alias in node.names]
    return out


def package_names(tree: ast.Module) -> set[str]:
    """The local names bound to dyhead_d2 modules or objects."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {
                (a.asname or a.name).split(".")[0]
                for a in node.names
                if a.name.startswith("dyhead")
            }
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dyhead_d2"):
            names |= {a.asname or a.name for a in node.names}
    return names


def private_patches(tree: ast.Module) -> list[str]:
    """``monkeypatch.setattr(pkg_thing, "_name", ...)``-like calls on the package's private names
    (also ``"dyhead_d2.x._name"`` targets of setattr and ``mock.patch``)."""
    local = package_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = ast.unparse(node.func)
        if func.split(".", 1)[-1] not in PATCHERS:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            target = first.value
            if target.startswith("dyhead_d2") and target.rsplit(".", 1)[-1].startswith("_"):
                found.append(ast.unparse(node))
            continue
        root = ast.unparse(first).split(".")[0]
        name = node.args[1] if len(node.args) > 1 else None
        if (
            root in local
            and isinstance(name, ast.Constant)
            and isinstance(name.value, str)
            and name.value.startswith("_")
        ):
            found.append(ast.unparse(node))
    return found


def test_no_test_module_imports_another():
    offenders = {}
    for path in suite_modules():
        bad = [m for m in imports_of(ast.parse(path.read_text())) if m.startswith("tests.test_")]
        if bad:
            offenders[path.name] = bad
    assert not offenders, offenders


def test_no_test_patches_the_packages_private_functions():
    offenders = {}
    for path in suite_modules():
        bad = private_patches(ast.parse(path.read_text()))
        if bad:
            offenders[path.name] = bad
    assert not offenders, offenders


def test_the_rules_see_what_they_look_for():
    code = (
        "from dyhead_d2.data import synthetic\n"
        "from .test_train_net import _printed_ap\n"
        "def test_x(monkeypatch):\n"
        "    monkeypatch.setattr(synthetic, '_write_image', None)\n"
        "    monkeypatch.setattr('dyhead_d2.data.synthetic._write_image', None)\n"
        "    monkeypatch.setattr(synthetic, 'render_synthetic_image', None)\n"
        "    monkeypatch.setattr(sys, '_private', None)\n"
    )
    tree = ast.parse(code)
    assert "tests.test_train_net._printed_ap" in imports_of(tree)
    assert len(private_patches(tree)) == 2
