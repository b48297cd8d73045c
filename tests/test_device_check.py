"""dyhead_d2.benchmark.device_check: the pieces of the GPU check, on small hand-made inputs."""

import warnings

import pytest
import torch
from torch import nn

from . import needs_detectron2

needs_detectron2()

from detectron2.layers import FrozenBatchNorm2d  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

from dyhead_d2.benchmark import device_check as dc  # noqa: E402


def detections(boxes, classes, scores):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
    inst.pred_classes = torch.as_tensor(classes)
    inst.scores = torch.as_tensor(scores)
    return inst


def test_compare_detections_pairs_by_class_and_overlap_not_by_order():
    a = detections([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 3], [0.9, 0.8, 0.7])
    # Same boxes, in another order, one moved by 0.25 px; the third has another class.
    b = detections(
        [[20, 20, 40, 40.25], [0, 0, 10, 10], [50, 50, 60, 60]], [2, 1, 4], [0.8, 0.9, 0.7]
    )
    worst, pairs, unpaired = dc.compare_detections(a, b)
    assert pairs == 2 and unpaired == 2
    assert worst == pytest.approx(0.25)
    worst, pairs, unpaired = dc.compare_detections(a, a)
    assert (worst, pairs, unpaired) == (0.0, 3, 0)
    empty = detections(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0))
    assert dc.compare_detections(a, empty) == (0.0, 0, 3)


def test_calibrate_batchnorm_normalises_each_layer_in_turn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), FrozenBatchNorm2d(8), nn.Conv2d(8, 4, 1), FrozenBatchNorm2d(4)
    )
    x = torch.randn(2, 3, 12, 12) * 50 + 7
    assert dc.calibrate_batchnorm(model, lambda: model(x)) == 2
    with torch.no_grad():
        for upto in (2, 4):  # after each norm: zero mean, unit variance per channel
            y = model[:upto](x)
            torch.testing.assert_close(
                y.mean(dim=(0, 2, 3)), torch.zeros(y.shape[1]), atol=1e-4, rtol=0
            )
            torch.testing.assert_close(
                y.var(dim=(0, 2, 3)), torch.ones(y.shape[1]), atol=1e-3, rtol=0
            )
    # The hooks are gone: another input leaves the statistics alone.
    mean = model[1].running_mean.clone()
    with torch.no_grad():
        model(x + 100)
    assert torch.equal(model[1].running_mean, mean)


def test_spread_class_logits_gives_the_asked_spread():
    conv = nn.Conv2d(64, 80, 1)
    features = [torch.randn(1, 64, 20, 20) * 0.2, torch.randn(1, 64, 10, 10) * 0.2]
    dc.spread_class_logits(conv, features, spread=2.0)
    with torch.no_grad():
        out = torch.cat([(conv(f) - conv.bias[:, None, None]).flatten() for f in features])
    assert out.std().item() == pytest.approx(2.0, rel=0.1)


def test_format_table_has_a_line_per_row_and_aligned_columns():
    rows = [dc.Row("a", "s1", 1.23456, "s"), dc.Row("longer check", "s2", None, "GiB", "ref", "n")]
    lines = dc.format_table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("check") and set(lines[1]) <= {"-", " "}
    assert "1.235" in lines[2] and "n/a" in lines[3]
    assert lines[2].index("1.235") == lines[3].index("n/a")


def test_guarded_turns_an_error_into_a_row():
    rows = []
    dc.guarded(rows, "ok", lambda: [dc.Row("ok", "x", 1.0, "s")])
    dc.guarded(rows, "broken", lambda: 1 / 0)
    assert [r.check for r in rows] == ["ok", "broken"]
    assert rows[1].value is None and "ZeroDivisionError" in rows[1].note


def test_measure_times_every_repeat():
    calls = []
    m = dc.measure(lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2)
    assert len(calls) == 5 and m.seconds >= 0 and m.peak_bytes is None
    with pytest.raises(ValueError, match="repeats"):
        dc.measure(lambda: None, torch.device("cpu"), repeats=0, warmup=0)


def test_run_pytest_counts_from_junit(tmp_path):
    (tmp_path / "test_x.py").write_text(
        "import pytest\n"
        "def test_pass(): pass\n"
        "def test_fail(): assert False\n"
        "@pytest.mark.skip\n"
        "def test_skip(): pass\n"
    )
    s = dc.run_pytest(["test_x.py"], str(tmp_path), timeout=120)
    assert (s.collected, s.passed, s.failed, s.errors, s.skipped) == (3, 1, 1, 0, 1)
    assert s.returncode == 1


def test_cuda_test_rows_run_the_marked_tests_of_the_given_folder(tmp_path):
    tests = tmp_path / "my_tests"
    tests.mkdir()
    (tests / "test_y.py").write_text(
        "import pytest\n"
        "@pytest.mark.cuda\n"
        "def test_marked(): pass\n"
        "@pytest.mark.cuda\n"
        "def test_marked_failing(): assert False\n"
        "def test_unmarked(): assert False\n"
    )
    (row,) = dc.cuda_test_rows(str(tests), timeout=120)
    assert row.value == 1 and row.note == (
        "of 2: 1 failed, 0 errors, 0 skipped; float32 comparisons with TF32 off"
    )
    assert row.setting == f"pytest -m cuda {tests} (exit 1)"
    # The package does not ship its tests: without a folder the row says they did not run.
    (row,) = dc.cuda_test_rows(None)
    assert row.value is None and row.setting == "not run"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dc.cuda_test_rows(str(tmp_path / "absent"))


def test_make_trainer_picks_the_trainer_train_net_builds():
    from detectron2.engine import AMPTrainer, SimpleTrainer

    from dyhead_d2.engine import AutocastForward

    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    plain = dc.make_trainer(model, [], opt, amp=False, device_type="cuda")
    assert type(plain) is SimpleTrainer and plain.model is model
    cpu_amp = dc.make_trainer(model, [], opt, amp=True, device_type="cpu")
    assert type(cpu_amp) is SimpleTrainer and isinstance(cpu_amp.model, AutocastForward)
    assert cpu_amp.model.dtype == torch.bfloat16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GradScaler warns that CUDA is absent here
        cuda_amp = dc.make_trainer(model, [], opt, amp=True, device_type="cuda")
    assert type(cuda_amp) is AMPTrainer and cuda_amp.precision == torch.float16
    assert dc.amp_dtype(torch.device("cuda")) == torch.float16
    assert dc.amp_dtype(torch.device("cpu")) == torch.bfloat16


def test_measure_training_takes_optimizer_steps():
    torch.manual_seed(0)

    class Regression(nn.Module):  # a Detectron2-style model: list of dicts in, losses out
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(3, 1)

        def forward(self, batch):
            x = torch.stack([b["x"] for b in batch])
            y = torch.stack([b["y"] for b in batch])
            return {"loss": (self.net(x) - y).square().mean()}

    batch = [{"x": torch.randn(3), "y": torch.randn(1)} for _ in range(4)]
    model = Regression()
    with torch.no_grad():
        loss_before = model(batch)["loss"].item()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m = dc.measure_training(model, batch, opt, False, torch.device("cpu"), repeats=2, warmup=1)
    assert m.seconds > 0 and m.peak_bytes is None
    # Three steps of gradient descent on one batch (a convex loss, a small step) lower its loss.
    with torch.no_grad():
        assert model(batch)["loss"].item() < loss_before
