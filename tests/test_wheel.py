"""A built wheel, installed away from the checkout, imports every module of the package and finds
its configs: nothing in the library reads the checkout or the tests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from . import needs_detectron2

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "dyhead_d2", "configs")

CHECK = """
import json, os, pkgutil, importlib, sys
import dyhead_d2
from dyhead_d2 import model_zoo
from dyhead_d2.benchmark.detector import detector_builder

site = sys.argv[1]
names = sorted(m.name for m in pkgutil.walk_packages(dyhead_d2.__path__, "dyhead_d2."))
for name in names:
    importlib.import_module(name)
cfg = model_zoo.get_config("COCO/atss_dyhead_R_50_caffe_FPN_1x.py")
quickstart = model_zoo.get_config("quickstart/atss_dyhead_synthetic.py")
retinanet = model_zoo.get_config("COCO/retinanet_dyhead_R_50_caffe_FPN_1x.py")
root = model_zoo.configs_root()
print(json.dumps({
    "package": dyhead_d2.__file__,
    "configs_root": str(root),
    "configs": sorted(str(p.relative_to(root)) for p in root.rglob("*.py")),
    "modules": names,
    "num_classes": [cfg.model.num_classes, quickstart.model.num_classes,
                    retinanet.model.num_classes],
    "port": cfg.model.backbone.dyhead.port,
    "builder": callable(detector_builder()),
}))
"""


def source_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "dyhead_d2").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if len(parts) > 1:  # the top-level package itself is imported, not walked
            names.append(".".join(parts))
    return sorted(names)


def test_installed_wheel_imports_every_module_and_loads_configs(tmp_path):
    needs_detectron2()
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:  # a clean copy: no build/ left over from an earlier build
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        ignore = (
            {"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}
        )
        copy(ROOT / name, src / name, **ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # The installed setuptools builds it where there is one (no download), else pip fetches one.
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("setuptools") else []
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", *isolation, str(src), "-w", str(tmp_path / "dist")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dyhead_d2-*.whl")
    site = tmp_path / "site"
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    run = subprocess.run(
        [sys.executable, "-c", CHECK, str(site)],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(found["package"]).is_relative_to(site)
    assert Path(found["configs_root"]) == site / "dyhead_d2" / "model_zoo" / "configs"
    assert found["modules"] == source_modules()
    shipped = sorted(str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.py"))
    assert found["configs"] == shipped
    assert found["num_classes"] == [80, 5, 80] and found["port"] == "authors"
    assert found["builder"]
