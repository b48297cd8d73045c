"""Two GLOO workers with one image each train exactly like one process with both images."""

import os

import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()

import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from .d2_models import build_tiny_atss, make_input  # noqa: E402

IMAGES = [
    # Different numbers of objects, so the per-worker normalisers differ from the global ones.
    dict(height=128, width=128, boxes=[[16, 16, 64, 80], [72, 40, 120, 120]], classes=[0, 1]),
    dict(height=128, width=128, boxes=[[30, 50, 100, 110]], classes=[2], seed=3),
]


def _batch(indices):
    return [make_input(**IMAGES[i]) for i in indices]


def _losses_and_grads(model, batch):
    with EventStorage():
        losses = model(batch)
    sum(losses.values()).backward()
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    grads = {n: p.grad.clone() for n, p in inner.named_parameters() if p.grad is not None}
    return {k: v.item() for k, v in losses.items()}, grads


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        model = build_tiny_atss(seed=0, bottom_up="resnet_frozen_bn")
        model.train()
        ddp = DistributedDataParallel(model, device_ids=None, find_unused_parameters=True)
        torch.save(_losses_and_grads(ddp, _batch([rank])), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_workers_match_one_process(tmp_path):
    torch.set_num_threads(1)
    model = build_tiny_atss(seed=0, bottom_up="resnet_frozen_bn")
    model.train()
    single_losses, single_grads = _losses_and_grads(model, _batch([0, 1]))

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp
    procs = [
        ctx.Process(target=_worker, args=(r, str(tmp_path / "init"), str(tmp_path)))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0, "a worker failed"
    results = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]

    # Each worker normalises its own sums by the all-reduced average normaliser, so the mean of
    # the workers' losses is the single-process loss ...
    for key, value in single_losses.items():
        mean = (results[0][0][key] + results[1][0][key]) / 2
        assert mean == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # ... and so are the DDP-averaged gradients (identical on both workers).
    for name, g in single_grads.items():
        for _, grads in results:
            torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-6, msg=name)
    # Normalising per worker instead would differ: the workers' positives are unequal.
    assert results[0][0]["loss_cls"] != pytest.approx(results[1][0]["loss_cls"], rel=1e-3)
