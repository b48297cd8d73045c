"""A diverging run ends with one clear error, checkpoints stay finite, --resume continues;
a NaN image is a ValueError naming the input."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from . import needs_detectron2  # noqa: E402

needs_detectron2()

from detectron2.config import instantiate  # noqa: E402

from dyhead_d2.checkpoint import DyHeadCheckpointer  # noqa: E402
from dyhead_d2.config import load_config  # noqa: E402
from dyhead_d2.inference import InputError, Predictor  # noqa: E402
from dyhead_d2.layers import NonFiniteError  # noqa: E402

from .tiny_quickstart import QUICKSTART, ROOT, TINY  # noqa: E402


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.register_buffer("stat", torch.ones(3))


def test_checkpointer_writes_and_reads_only_finite_states(tmp_path):
    model = _Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.conv(torch.ones(1, 2, 2, 2)).sum().backward()
    opt.step()  # momentum buffers exist now
    ckpt = DyHeadCheckpointer(model, str(tmp_path), optimizer=opt)
    ckpt.save("model_0000001")
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")

    with torch.no_grad():
        model.conv.weight[1, 0] = float("nan")
    with pytest.raises(NonFiniteError) as err:
        ckpt.save("model_0000002")
    assert str(err.value) == (
        "refusing to write checkpoint model_0000002.pth: model.conv.weight holds "
        "1 NaN and 0 Inf of 6 values"
    )
    with torch.no_grad():
        model.conv.weight[1, 0] = 0.0
    opt.state[model.conv.bias]["momentum_buffer"][2] = float("inf")
    with pytest.raises(NonFiniteError, match=r"optimizer\.state\.1\.momentum_buffer holds 0 NaN"):
        ckpt.save("model_0000003")
    model.stat[0] = float("-inf")  # buffers count too
    with pytest.raises(NonFiniteError, match=r"model\.stat holds 0 NaN and 1 Inf"):
        ckpt.save("model_0000004")
    # Nothing was written; last_checkpoint still names the good one.
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000001.pth"]
    assert ckpt.get_checkpoint_file() == str(tmp_path / "model_0000001.pth")

    # A file holding NaN (written by something else) is refused on loading.
    bad = tmp_path / "poisoned.pth"
    state = _Tiny().state_dict()
    state["conv.bias"][0] = float("nan")
    torch.save({"model": state}, bad)
    with pytest.raises(NonFiniteError) as err:
        DyHeadCheckpointer(_Tiny()).load(str(bad))
    assert f"checkpoint {str(bad)!r} is not usable: model.conv.bias holds 1 NaN" in str(err.value)
    fresh = _Tiny()
    DyHeadCheckpointer(fresh).load(str(tmp_path / "model_0000001.pth"))
    assert torch.isfinite(fresh.conv.weight).all()


@pytest.fixture(scope="module")
def tiny_atss(tmp_path_factory):
    """The tiny quickstart model's config (no data loaders) and a checkpoint of it."""
    cfg = load_config(os.path.join(ROOT, QUICKSTART), TINY)
    del cfg.dataloader
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    path = tmp_path_factory.mktemp("tiny_atss") / "model.pth"
    torch.save({"model": model.state_dict()}, path)
    cfg.train.init_checkpoint = str(path)
    cfg.train.device = "cpu"
    return cfg, model


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_image_is_a_value_error_naming_the_input(tiny_atss, value):
    cfg, model = tiny_atss
    good = torch.rand(3, 64, 96) * 255
    bad = good.clone()
    bad[1, 10, 20] = float(value)
    inputs = [{"image": good}, {"image": bad, "file_name": "street.jpg"}]
    with pytest.raises(ValueError) as err, torch.no_grad():
        model(inputs)
    counts = "1 NaN and 0 Inf" if value == "nan" else "0 NaN and 1 Inf"
    assert str(err.value) == (
        f"input 1 (street.jpg): its 'image' tensor (3, 64, 96) holds {counts} of 18432 values; "
        "the model needs finite pixel values"
    )
    with torch.no_grad():  # finite float and uint8 images pass
        model([{"image": good}, {"image": good.to(torch.uint8)}])

    predictor = Predictor(cfg)
    image = np.random.default_rng(0).uniform(0, 255, (48, 64, 3)).astype(np.float32)
    image[5, 6, 2] = float(value)
    with pytest.raises(InputError, match=rf"the image \(\(48, 64, 3\), float32\) holds {counts}"):
        predictor(image)
    predictor(np.nan_to_num(image, posinf=0.0))  # the same image, finite: runs


# ------------------------------------------------------------------------------------------
# train_net.py with a parameter set to NaN at an iteration (tests/nan_train_net.py)
# ------------------------------------------------------------------------------------------


def _train(tmp_path, out_dir, *args, nan=None):
    env = dict(
        os.environ,
        DETECTRON2_DATASETS=str(tmp_path / "datasets"),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    common = [
        "--config-file",
        QUICKSTART,
        *TINY,
        f"train.output_dir={out_dir}",
        "train.eval_period=0",
        "train.checkpointer.period=2",
        "train.checkpointer.max_to_keep=100",
    ]
    if nan is None:
        cmd = [sys.executable, "train_net.py", *args[:1], *common, *args[1:]]
    else:
        cmd = [sys.executable, "-m", "tests.nan_train_net", *nan, *common, *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _checkpoint_is_finite(path) -> bool:
    state = torch.load(path, map_location="cpu", weights_only=False)
    tensors = list(state["model"].values())
    for group in state["trainer"]["optimizer"]["state"].values():
        tensors += [v for v in group.values() if torch.is_tensor(v)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


DIVERGENCES = {
    # NaN set after the step of iteration 5, before the periodic checkpointer saves it.
    "checkpoint": (
        ("head.cls_logits.weight", "5", "after_step"),
        5,
        "refusing to write checkpoint model_0000005.pth: model.head.cls_logits.weight holds "
        "1 NaN and 0 Inf of 320 values.",
    ),
    # NaN in an offset conv before iteration 4: the DyHead block's check stops the forward.
    "offsets": (
        ("backbone.dyhead.blocks.0.offset_conv.weight", "4", "before_step"),
        4,
        "DyHead block 0: the offsets/masks predicted by offset_conv are not finite on level 0",
    ),
    # NaN in the classifier's bias before iteration 4: Detectron2's loss check.
    "loss": (
        ("head.cls_logits.bias", "4", "before_step"),
        4,
        "the loss became non-finite: loss_dict = {'loss_cls': np.float64(nan)",
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(DIVERGENCES))
def test_diverging_run_ends_with_one_error_and_resumes(tmp_path, case):
    nan, iteration, cause = DIVERGENCES[case]
    out_dir = tmp_path / "train"
    run = _train(tmp_path, out_dir, "train.max_iter=20", nan=nan)
    assert run.returncode == 1, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("train_net.py: error:")]
    assert len(errors) == 1, run.stderr[-3000:]
    error = errors[0]
    assert error.startswith(f"train_net.py: error: training diverged at iteration {iteration}: ")
    assert cause in error
    if case != "checkpoint":  # there the cause already names the parameter
        assert f"First non-finite parameter: {nan[0]} (1 NaN and 0 Inf of " in error
    # Checkpoints after iterations 1 and 3 only; the last one is named in the error.
    last = out_dir / "model_0000003.pth"
    assert (out_dir / "last_checkpoint").read_text().strip() == last.name
    assert sorted(p.name for p in out_dir.glob("*.pth")) == ["model_0000001.pth", last.name]
    assert f"The last good checkpoint is {last}: " in error and "--resume" in error
    assert _checkpoint_is_finite(last)
    if case != "checkpoint":
        return
    # The same command with --resume (and without the NaN) continues from it.
    resumed = _train(tmp_path, out_dir, "--resume", "train.max_iter=7")
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert re.search(r"Loading from .*model_0000003\.pth", log)
    assert "Starting training from iteration 4" in log
    assert _checkpoint_is_finite(out_dir / "model_final.pth")
