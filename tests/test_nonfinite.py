"""NaN and Inf never reach torchvision's deformable convolution, and end in a clear error.

``torchvision.ops.deform_conv2d`` segfaults on a NaN offset (torch 2.14.1, torchvision 0.29.1,
CPU), so every case that would reach it runs in a subprocess: a missing guard fails the test
with the signal instead of killing pytest.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dyhead_d2.layers import DyHead, NonFiniteError
from dyhead_d2.layers.finite import find_non_finite

ROOT = Path(__file__).resolve().parents[1]

# Runs in a subprocess with argv[1] = deform_impl. First the deformable conv on its own, with a
# spy on torchvision's op that records whether it was ever handed a non-finite offset or mask;
# prints one JSON line. Then a DyHead whose block 1 has a NaN offset_conv weight, uncaught.
SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    import dyhead_d2.layers.deform_conv as dc
    from dyhead_d2.layers import DyHead, modulated_deform_conv
    from dyhead_d2.layers.sampled_deform_conv import sampled_deform_conv

    impl = sys.argv[1]
    handed_non_finite = []
    real_op = dc.deform_conv2d

    def spy(x, offset, weight, bias, stride, padding, dilation, mask):
        handed_non_finite.append(
            not bool(torch.isfinite(offset).all() and torch.isfinite(mask).all())
        )
        return real_op(x, offset, weight, bias, stride=stride, padding=padding,
                       dilation=dilation, mask=mask)

    dc.deform_conv2d = spy
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 7, 6, generator=g)
    w = torch.randn(5, 4, 3, 3, generator=g)
    b = torch.randn(5, generator=g)
    off = torch.randn(2, 18, 7, 6, generator=g)
    mask = torch.rand(2, 9, 7, 6, generator=g)
    results = {}
    for bias in (None, b):
        key = "bias" if bias is not None else "nobias"
        out = modulated_deform_conv(x, off, mask, w, bias, impl=impl)
        want = (real_op(x, off, w, bias, padding=1, mask=mask) if impl == "torchvision"
                else sampled_deform_conv(x, off, mask, w, bias))
        results[f"finite/{key}"] = bool(torch.equal(out, want))
        for name in ("offset", "mask"):
            for value in ("nan", "inf", "-inf"):
                o, m = off.clone(), mask.clone()
                (o if name == "offset" else m)[1, 3, 2, 4] = float(value)
                out = modulated_deform_conv(x, o, m, w, bias, impl=impl)
                results[f"{name}={value}/{key}"] = bool(torch.isnan(out).all())
    results["handed_non_finite"] = any(handed_non_finite)
    print(json.dumps(results), flush=True)

    torch.manual_seed(0)
    tower = DyHead(32, 32, 2, offset_mode="official", dcn_bias=False, zero_init_offset=False,
                   init_style="authors", deform_impl=impl)
    with torch.no_grad():
        tower.blocks[1].offset_conv.weight[3, 5, 1, 1] = float("nan")
    tower([torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)])
    print("no error")
    """
)


@pytest.mark.parametrize("impl", ["torchvision", "sampled"])
def test_nan_offsets_never_reach_the_op_and_raise(impl):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, impl],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # An uncaught exception exits with 1; a segfault would be -11.
    assert out.returncode == 1, f"exit status {out.returncode}\n{out.stderr[-3000:]}"
    results = json.loads(out.stdout.splitlines()[0])
    assert results.pop("handed_non_finite") is False
    # Finite inputs: exactly the unguarded op's result; any NaN/Inf: every output value NaN.
    assert results == {k: True for k in results} and len(results) == 14, results
    assert "no error" not in out.stdout
    last = out.stderr.strip().splitlines()[-1]
    assert last == (
        "dyhead_d2.layers.finite.NonFiniteError: DyHead block 1: the offsets/masks predicted by "
        "offset_conv are not finite on level 0 (64 NaN and 0 Inf of 1728 values), level 1 "
        "(16 NaN and 0 Inf of 432 values); its input is finite, but parameter "
        "blocks.1.offset_conv.weight holds 1 NaN and 0 Inf of 7776 values"
    ), out.stderr[-3000:]


@pytest.mark.parametrize("impl", ["torchvision", "sampled"])
def test_non_finite_input_is_named(impl):
    # No NaN offset reaches the op here (the block raises first), so this runs in-process.
    torch.manual_seed(0)
    tower = DyHead(
        32,
        32,
        1,
        offset_mode="official",
        dcn_bias=True,
        zero_init_offset=False,
        init_style="mmdet",
        deform_impl=impl,
    )
    feats = [torch.randn(1, 32, 8, 8), torch.randn(1, 32, 4, 4)]
    feats[1][0, 7, 2, 3] = float("inf")
    with pytest.raises(NonFiniteError) as err:
        tower(feats)
    msg = str(err.value)
    assert msg.startswith("DyHead block 0: the offsets/masks predicted by offset_conv are not ")
    assert "on level 1 (" in msg and "level 0" not in msg
    assert "the block's input is not finite either (level.1 holds 0 NaN and 1 Inf" in msg


def test_finite_tower_is_unchanged_by_the_check():
    # The check only reads: the same tower gives the same result through forward and through
    # forward_per_level without precomputed offsets.
    torch.manual_seed(0)
    tower = DyHead(
        32,
        32,
        2,
        offset_mode="topleft",
        dcn_bias=True,
        zero_init_offset=False,
        init_style="mmdet",
        deform_impl="torchvision",
    )
    feats = [torch.randn(2, 32, 9, 7), torch.randn(2, 32, 5, 4)]
    out = tower(feats)
    ref = tower.blocks[1].forward_per_level(tower.blocks[0].forward_per_level(feats))
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


def test_find_non_finite_names_the_first_entry():
    state = {
        "model": {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan"), float("inf")])},
        "trainer": {"optimizer": {"state": {0: {"step": torch.tensor(3), "buf": torch.ones(2)}}}},
    }
    assert find_non_finite(state) == ("model.b", "1 NaN and 1 Inf of 3 values")
    state["model"]["b"] = torch.zeros(3)
    assert find_non_finite(state) is None
    state["trainer"]["optimizer"]["state"][0]["buf"][1] = -float("inf")
    assert find_non_finite(state) == (
        "trainer.optimizer.state.0.buf",
        "0 NaN and 1 Inf of 2 values",
    )
