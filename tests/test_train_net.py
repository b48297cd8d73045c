"""train_net.py: user mistakes end in one line; training resumes; --eval-only reproduces the AP."""

import json
import re
import signal
import time

import pytest

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from .tiny_quickstart import QUICKSTART, TINY, printed_ap, run_train_net  # noqa: E402


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config-file", "configs/nope.py"], "config file 'configs/nope.py' does not exist"),
        (
            ["--config-file", QUICKSTART, "train.max_iters=3"],
            "has no key 'train.max_iters'; did you mean train.max_iter",
        ),
        (
            ["--config-file", QUICKSTART, "model.backbone.dyhead.offset_mode=???"],
            "leaves these keys unset ('???')",
        ),
        (
            ["--config-file", QUICKSTART, *TINY, "dataloader.train.dataset.names=coco_2099_train"],
            "dataset 'coco_2099_train' is not registered",
        ),
        (
            ["--config-file", "configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py"],
            "dataset 'coco_2017_train' is registered but its json_file",
        ),
        (
            ["--config-file", QUICKSTART, *TINY, "train.init_checkpoint=/no/such/model.pth"],
            "checkpoint '/no/such/model.pth' does not exist",
        ),
        (["--config-file", QUICKSTART, "--eval-only", *TINY], "--eval-only needs weights"),
        (
            ["--config-file", QUICKSTART, *TINY, "--eval-only"],
            "'--eval-only' is a flag: put flags before the key=value overrides",
        ),
    ],
)
def test_preflight_names_the_mistake(args, message, train_net_module):
    from detectron2.engine import default_argument_parser

    from dyhead_d2.config import ConfigError

    parsed = default_argument_parser().parse_args(args)
    with pytest.raises(ConfigError) as err:
        train_net_module.preflight(parsed)
    assert message in str(err.value)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    out = run_train_net(["--config-file", QUICKSTART, "train.max_iters=3"], tmp_path, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("train_net.py: error:")]
    assert len(errors) == 1 and "has no key 'train.max_iters'" in errors[0]
    assert "Traceback" not in out.stderr


def _metrics(output_dir):
    lines = (output_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_eval_only_reproduces_training_ap(tmp_path):
    out_dir = tmp_path / "train"
    common = [*TINY, "model.test_score_thresh=0.0", f"train.output_dir={out_dir}"]
    precision = "train.amp.cpu_bfloat16=auto"  # bfloat16 where the CPU has it, else float32
    run = run_train_net(
        ["--config-file", QUICKSTART, *common, "train.max_iter=6", precision], tmp_path
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    trained = printed_ap(run.stdout + run.stderr)
    assert (out_dir / "model_final.pth").is_file()
    # "auto" decides per machine, and one log line says which and why.
    from dyhead_d2.engine import cpu_has_native_bfloat16

    decisions = re.findall(r"Precision: (.*)", run.stdout + run.stderr)
    expected = "bfloat16 autocast on CPU" if cpu_has_native_bfloat16() else "float32 on CPU"
    assert len(decisions) == 1 and decisions[0].startswith(expected), decisions

    eval_dir = tmp_path / "eval"
    evaluated = run_train_net(
        [
            "--config-file",
            QUICKSTART,
            "--eval-only",
            *common[:-1],
            f"train.output_dir={eval_dir}",
            f"train.init_checkpoint={out_dir / 'model_final.pth'}",
        ],
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert printed_ap(evaluated.stdout + evaluated.stderr) == trained
    # Not only the summary: every detection is the same.
    detections = [
        json.loads((d / "inference" / "coco_instances_results.json").read_text())
        for d in (out_dir, eval_dir)
    ]
    assert len(detections[0]) > 0 and detections[0] == detections[1]


@pytest.mark.slow
def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    out_dir = tmp_path / "train"
    args = [
        "--config-file",
        QUICKSTART,
        *TINY,
        f"train.output_dir={out_dir}",
        "train.eval_period=0",
        "train.checkpointer.period=3",
        "train.checkpointer.max_to_keep=100",
        "optimizer.lr=0.01",
    ]
    # The first run is far from done when it is killed, however fast the machine trains: it is
    # killed as soon as a checkpoint after iteration 5 is complete (Detectron2 names it in
    # last_checkpoint only once the file is written).
    proc = run_train_net([*args, "train.max_iter=1000"], tmp_path, wait=False)
    deadline = time.time() + 300
    while (saved := _saved_iteration(out_dir)) < 5:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert not (out_dir / "model_final.pth").exists()
    saved = _saved_iteration(out_dir)  # a later one may have landed before the kill
    logged_before_kill = len(_metrics(out_dir))

    # Same command plus --resume; it is told to stop 6 iterations after the checkpoint.
    stop = saved + 7
    resumed = run_train_net(["--resume", *args, f"train.max_iter={stop}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = resumed.stdout + resumed.stderr
    assert re.search(rf"Loading from .*model_{saved:07d}\.pth", log)
    assert f"Starting training from iteration {saved + 1}" in log
    assert (out_dir / "model_final.pth").is_file()
    after = _metrics(out_dir)[logged_before_kill:]
    iterations = [m["iteration"] for m in after if "lr" in m]
    assert iterations == list(range(saved + 1, stop))
    # The schedule continues instead of restarting its warm-up (a tenth of the run): the first
    # resumed iteration, before the first decay at 3/4 of the run, trains at the configured LR.
    assert saved + 1 < 0.75 * stop
    assert [m["lr"] for m in after if "lr" in m][0] == pytest.approx(0.01)


def _saved_iteration(out_dir) -> int:
    """The iteration of the checkpoint named in last_checkpoint, or -1."""
    match = re.fullmatch(r"model_(\d{7})\.pth", _last_checkpoint(out_dir).strip())
    return int(match.group(1)) if match else -1


def _last_checkpoint(out_dir):
    path = out_dir / "last_checkpoint"
    return path.read_text() if path.is_file() else ""


@pytest.mark.slow
def test_two_cpu_processes_train(tmp_path):
    out_dir = tmp_path / "ddp"
    run = run_train_net(
        [
            "--config-file",
            QUICKSTART,
            "--num-gpus",
            "2",
            *TINY,
            f"train.output_dir={out_dir}",
            "train.max_iter=4",
            "train.eval_period=0",
        ],
        tmp_path,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "World size: 2" in log
    assert (out_dir / "model_final.pth").is_file()
    trained = {m["iteration"] for m in _metrics(out_dir) if "total_loss" in m}
    assert {0, 1, 2, 3} <= trained
