"""tools/gpu_check.py at tiny sizes on the CPU: every row of the table is there, the two
deform_impls and the two devices agree, and every measured number is positive, so that device
time is spent only on a script known to run."""

import json
import re
from pathlib import Path

import pytest
import torch

from . import needs_detectron2

needs_detectron2()

from dyhead_d2.benchmark.gpu_check import main as gpu_check_main  # noqa: E402

EXPECTED = [
    "cuda tests",
    "tower float32 agreement",
    "tower forward",
    "tower forward agreement",
    "tower forward+backward",
    "tower forward+backward agreement",
    "detector forward",
    "detector forward agreement",
    "detector forward+backward",
    "detector forward+backward agreement",
    "training",
    "training peak memory",
    "inference",
    "detections cpu vs device",
]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "rows.json"
    tests = str(Path(__file__).resolve().parent)
    gpu_check_main(["--device", "cpu", "--small", "--tests", tests, "--json", str(out)])
    return json.loads(out.read_text())


@pytest.mark.slow
def test_every_row_is_there_and_none_failed(table):
    assert sorted({r["check"] for r in table}) == sorted(EXPECTED)
    assert not [r for r in table if r["setting"] == "error"]
    count = {c: sum(r["check"] == c for r in table) for c in EXPECTED}
    # One row per deform_impl / precision; one per compared quantity.
    assert count["tower forward"] == count["detector forward+backward"] == 2
    assert count["training"] == count["inference"] == count["training peak memory"] == 2
    assert count["tower forward+backward agreement"] == 2  # outputs, gradients
    # Outputs and gradients with TF32 off (on CUDA also with TF32 on).
    assert count["tower float32 agreement"] == (4 if torch.cuda.is_available() else 2)


@pytest.mark.slow
def test_the_cuda_tests_are_found_and_skip_without_a_gpu(table):
    (row,) = [r for r in table if r["check"] == "cuda tests"]
    collected, failed, errors, skipped = map(
        int, re.match(r"of (\d+): (\d+) failed, (\d+) errors, (\d+) skipped", row["note"]).groups()
    )
    assert collected == 4 and failed == errors == 0
    if torch.cuda.is_available():
        assert row["value"] == 4
    else:
        assert row["value"] == 0 and skipped == 4


@pytest.mark.slow
def test_numbers_are_positive_and_implementations_agree(table):
    for r in table:
        if r["unit"] in ("s", "s/iter", "img/s"):
            assert r["value"] > 0, r
        elif r["unit"] == "max|diff|":
            # float32 rounding, relative to the largest value of the compared tensor. The detector
            # rows compare the authors' model as written with the project's as Predictor runs it
            # (FrozenBN folded, channels-last on a CPU): other kernels, other rounding, which
            # DyHead's offsets carry to its sampling positions (bound as benchmark (c)'s test).
            relative = float(re.match(r"relative (\S+)", r["note"]).group(1))
            bound = 1e-3 if r["check"].startswith("detector") else 1e-4
            assert 0 <= relative < bound and r["value"] < 1e-2, r
        elif r["check"] == "training peak memory":
            assert r["value"] is None and r["note"] == "CUDA only"  # measured on CUDA only
    (det,) = [r for r in table if r["check"] == "detections cpu vs device"]
    pairs, unpaired = map(int, re.match(r"(\d+) pairs, (\d+) unpaired", det["note"]).groups())
    assert pairs >= 10 and unpaired == 0
    assert det["value"] <= 0.01
    precisions = [r["setting"].split(",")[0] for r in table if r["check"] == "training"]
    assert precisions == ["float32", "AMP bfloat16"]
