"""Why the CUDA-vs-CPU float32 tests run with TF32 off: on a CPU, TF32 convolutions (emulated)
alone exceed their tolerances, and a full-float32 computation by another implementation does
not."""

import copy

import torch

from dyhead_d2 import DyHead
from dyhead_d2.benchmark.tf32 import tf32

from .cuda_proxies import emulate_tf32_convolutions, round_to_tf32
from .dyhead_inputs import make_tower, perturb_block, pyramid


def test_round_to_tf32_keeps_10_mantissa_bits_ties_away_from_zero():
    one = 1.0
    ulp = 2.0**-10  # TF32's spacing above 1
    x = torch.tensor([one, one + ulp / 2, one + 1.5 * ulp, -(one + ulp / 2), one + ulp / 4, 3e-3])
    want = [one, one + ulp, one + 2 * ulp, -(one + ulp), one, None]
    got = round_to_tf32(x).tolist()
    assert got[:5] == want[:5]
    # Any value: within half a TF32 ulp (2**-11 relative) and 10 mantissa bits at most.
    assert abs(got[5] - 3e-3) <= 3e-3 * 2.0**-11
    assert torch.equal(round_to_tf32(round_to_tf32(x)), round_to_tf32(x))


def test_tf32_context_sets_and_restores_both_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    with tf32(False):
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        with tf32(True):
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
        assert not torch.backends.cudnn.allow_tf32
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == saved


def test_tf32_off_fixture(tf32_off):
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32


def _use_torchvision_op(tower):
    for m in tower.modules():
        if hasattr(m, "deform_impl"):
            m.deform_impl = "torchvision"
    return tower


def test_dyhead_cuda_test_tolerance_holds_for_float32_not_for_tf32():
    # tests/test_dyhead.py::test_cuda_float32_and_autocast_float16: the CPU's forward (the
    # sampled path) vs CUDA's (torchvision's op, cuDNN convolutions), atol = rtol = 1e-4.
    tower = make_tower()
    feats = pyramid()
    ref = tower(feats)
    as_on_cuda = _use_torchvision_op(copy.deepcopy(tower))
    float32 = as_on_cuda(feats)
    with emulate_tf32_convolutions():
        tf32_out = as_on_cuda(feats)
    worst_tf32 = max((o - r).abs().max().item() for o, r in zip(tf32_out, ref))
    assert worst_tf32 > 5e-4  # about 9e-4 on these weights
    for o, r in zip(float32, ref):
        torch.testing.assert_close(o, r, atol=1e-4, rtol=1e-4)


def _tower(deform_impl):
    torch.manual_seed(0)
    tower = DyHead(
        32,
        32,
        2,
        offset_mode="official",
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
        deform_impl=deform_impl,
    )
    for block in tower.blocks:
        perturb_block(block)
    return tower


def _outputs_and_gradients(tower, feats):
    inputs = [f.clone().requires_grad_() for f in feats]
    outs = tower(inputs)
    g = torch.Generator().manual_seed(4)
    sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs).backward()
    values = [o.detach() for o in outs] + [x.grad for x in inputs]
    return values + [p.grad for p in tower.parameters()]


def _worst_relative(got, ref):
    """test_fast_deform's measure: max |diff| over max(1, largest |reference value|)."""
    return max(
        (a.double() - b.double()).abs().max().item() / max(1.0, b.abs().max().item())
        for a, b in zip(got, ref)
    )


def test_fast_deform_cuda_test_tolerance_holds_for_float32_not_for_tf32():
    # tests/test_fast_deform.py::test_cuda_matches_cpu_reference_and_autocast: outputs and every
    # gradient of a 2-block tower vs the CPU with torchvision's op, relative tolerance 1e-4.
    feats = pyramid(channels=32)
    ref = _outputs_and_gradients(_tower("torchvision"), feats)
    for impl in ("sampled", "torchvision"):
        assert _worst_relative(_outputs_and_gradients(_tower(impl), feats), ref) <= 1e-4
        with emulate_tf32_convolutions():
            tf32_values = _outputs_and_gradients(_tower(impl), feats)
        assert _worst_relative(tf32_values, ref) > 1e-2  # about 0.8 (a weight's gradient)
