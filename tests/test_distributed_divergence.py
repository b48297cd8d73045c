"""A NaN on one rank stops every rank with the same one-line error, and none waits for a rank
that stopped: two GLOO processes, DyHead alone and train_net.py end to end."""

import os
import socket
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dyhead_d2.layers import DyHead, NonFiniteError

from . import needs_detectron2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tower_worker(rank, init_file, out_dir, poisoned_rank):
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
        timeout=timedelta(seconds=20),
    )  # fmt: skip
    try:
        torch.manual_seed(0)
        tower = DyHead(16, 16, 2, port="authors", deform_impl="sampled").train()
        g = torch.Generator().manual_seed(rank)
        feats = [torch.randn(1, 16, 8, 8, generator=g), torch.randn(1, 16, 4, 4, generator=g)]
        if rank == poisoned_rank:
            feats[1][0, 3, 1, 2] = float("nan")
        try:
            tower(feats)
            result = "finished"
        except NonFiniteError as e:
            result = f"NonFiniteError: {e}"
        # Both ranks still talk to each other afterwards: nobody is stuck in a collective.
        dist.barrier()
        with open(os.path.join(out_dir, f"{rank}.txt"), "w") as f:
            f.write(result)
    finally:
        dist.destroy_process_group()


def _run_towers(tmp_path, poisoned_rank):
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.start_processes(
        _tower_worker,
        args=(str(tmp_path / "init"), str(tmp_path), poisoned_rank),
        nprocs=2,
        join=False,
        start_method=method,
    )
    deadline = time.monotonic() + 60
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "workers did not finish (waiting for each other?)"
    finally:
        for proc in ctx.processes:
            if proc.is_alive():
                proc.kill()
    return [(tmp_path / f"{r}.txt").read_text() for r in range(2)]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_nan_on_one_rank_stops_both_with_the_same_error(tmp_path):
    results = _run_towers(tmp_path, poisoned_rank=1)
    assert results[0] == results[1], results
    assert results[0].startswith(
        "NonFiniteError: DyHead block 0 on rank 1 of 2: the offsets/masks predicted by "
        "offset_conv are not finite on level 1 ("
    )
    assert "the block's input is not finite either (level.1 holds 1 NaN and 0 Inf" in results[0]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_finite_ranks_train_on(tmp_path):
    assert _run_towers(tmp_path, poisoned_rank=-1) == ["finished", "finished"]


# ------------------------------------------------------------------------------------------
# train_net.py, with the offset conv of block 0 returning a NaN on rank 1 at iteration 3
# ------------------------------------------------------------------------------------------

QUICKSTART = "configs/quickstart/atss_dyhead_synthetic.py"
OVERRIDES = [
    "dataloader.train.dataset.names.num_train=16",
    "dataloader.train.dataset.names.num_val=8",
    "dataloader.test.dataset.names.num_train=16",
    "dataloader.test.dataset.names.num_val=8",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "model.backbone.dyhead.num_blocks=1",
    "train.max_iter=20",
    "train.eval_period=0",
    "train.checkpointer.period=100",
]
NAN = ["backbone.dyhead.blocks.0.offset_conv", "3", "output", "1"]
CAUSE = (
    "training diverged at iteration 3: DyHead block 0 on rank 1 of 2: the offsets/masks "
    "predicted by offset_conv are not finite on level 0 (1 NaN and 0 Inf of "
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan_train_net(tmp_path, out_dir, launch_args):
    env = dict(
        os.environ,
        DETECTRON2_DATASETS=str(tmp_path / "datasets"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=ROOT,
    )
    cmd = [sys.executable, "-m", "tests.nan_train_net", *NAN, "--config-file", QUICKSTART]
    cmd += [*launch_args, *OVERRIDES, f"train.output_dir={out_dir}"]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _one_line_error(proc, timeout=400) -> str:
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("train_net.py did not stop: a rank waits for one that stopped")
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("train_net.py: error:")]
    assert len(errors) == 1, stderr[-3000:]
    return errors[0]


def _logged_errors(log_file) -> list[str]:
    text = log_file.read_text()
    return [
        line.split("training diverged", 1)[1] for line in text.splitlines() if CAUSE[:19] in line
    ]


@pytest.mark.slow
def test_train_net_two_processes_one_machine(tmp_path):
    needs_detectron2()
    out_dir = tmp_path / "train"
    error = _one_line_error(_nan_train_net(tmp_path, out_dir, ["--num-gpus", "2"]))
    assert error.startswith(f"train_net.py: error: {CAUSE}"), error
    assert "All parameters are finite." in error
    # Both ranks stopped with this error (rank 1 logs to log.txt.rank1).
    logged = [_logged_errors(out_dir / name) for name in ("log.txt", "log.txt.rank1")]
    assert logged[0] == logged[1] and len(logged[0]) == 1
    assert error.endswith(logged[0][0])


@pytest.mark.slow
def test_train_net_two_machines_stop_together(tmp_path):
    # One process per "machine", as on two hosts: before every rank stopped in the same step,
    # machine 0 waited in a collective for rank 1 until the process group's timeout (30 min).
    needs_detectron2()
    url = f"tcp://127.0.0.1:{_free_port()}"
    procs = [
        _nan_train_net(
            tmp_path,
            tmp_path / "train",
            ["--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(r), "--dist-url", url],
        )
        for r in range(2)
    ]
    errors = [_one_line_error(p) for p in procs]
    assert errors[0] == errors[1]
    assert errors[0].startswith(f"train_net.py: error: {CAUSE}"), errors[0]
