"""The sampled deformable convolution and the sampled block forward against torchvision / the
reference."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from dyhead_d2 import DyHead
from dyhead_d2.benchmark.runner import main as benchmark_main
from dyhead_d2.layers import OFFSET_MODES, modulated_deform_conv
from dyhead_d2.layers.deform_conv import DEFORM_IMPLS, resolve_deform_impl
from dyhead_d2.layers.sampled_deform_conv import (
    gather_sum,
    sampled_deform_conv,
    sampled_deform_conv_levels,
)

from . import needs_detectron2
from .dyhead_inputs import C, make_block, perturb_block, pyramid

TOL = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: threads only add overhead, and on a machine shared with other jobs
    every parallel op can wait a scheduler slice for a busy core (10x slower tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _close(got, ref, what):
    """Max abs diff <= 1e-4, relative to the reference's largest value where that exceeds 1.

    Float32 gradients of a summed loss reach ~1e2 here; there two float32 implementations
    (torchvision's included) differ from the float64 result by ~1e-5 relative, so an absolute
    1e-4 would only measure summation order. Wrong corners or weights give O(1) relative errors.
    """
    diff = (got.double() - ref.double()).abs().max().item()
    scale = max(1.0, ref.double().abs().max().item())
    assert diff <= TOL * scale, f"{what}: max abs diff {diff} (largest |value| {scale})"


def _op_case(n, c, c_out, h, w, stride, dtype, kind, seed=0):
    """Inputs of one deformable conv; ``kind`` picks the offsets."""
    g = torch.Generator().manual_seed(seed)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c, 3, 3, generator=g, dtype=dtype) / (3 * c**0.5)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    mask = torch.rand(n, 9, ho, wo, generator=g, dtype=dtype)
    if kind == "fractional":
        # A few pixels: fractional positions, many outside the image.
        offset = 3 * torch.randn(n, 18, ho, wo, generator=g, dtype=dtype)
    elif kind == "integer":
        # Exact integer and half-integer positions, where bilinear weights have kinks: the
        # offset gradient depends on which corners the kernel picks.
        offset = torch.randint(-6, 7, (n, 18, ho, wo), generator=g).to(dtype) / 2
    else:  # "border": positions exactly at -1, in (-1, 0), at H - 1, in (H - 1, H), at H.
        offset = torch.randn(n, 18, ho, wo, generator=g, dtype=dtype)
        rows = (torch.arange(ho) * stride).view(1, ho, 1).to(dtype)
        cols = (torch.arange(wo) * stride).view(1, 1, wo).to(dtype)
        # tap k sits at (row - 1 + k // 3 + dy, col - 1 + k % 3 + dx)
        offset[:, 0] = -rows  # tap 0: y = -1 exactly
        offset[:, 3] = -cols - 0.25  # tap 1: x in (-1, 0)
        offset[:, 8] = h - 1 - rows  # tap 4: y = H - 1 exactly
        offset[:, 10] = h - 0.5 - rows  # tap 5: y in (H - 1, H)
        offset[:, 13] = w + 1 - cols  # tap 6: x = W exactly
        offset[:, 16] = h - rows - 1  # tap 8: y = H exactly
    return x, offset, mask, weight, bias


def _run(fn, inputs, stride, cotangent_seed=5):
    leaves = [t.clone().requires_grad_() for t in inputs]
    x, offset, mask, weight, bias = leaves
    out = fn(x, offset, mask, weight, bias, stride)
    g = torch.Generator().manual_seed(cotangent_seed)
    out.backward(torch.randn(out.shape, generator=g, dtype=out.dtype))
    return [out.detach()] + [t.grad for t in leaves]


def _torchvision(x, offset, mask, weight, bias, stride):
    return deform_conv2d(x, offset, weight, bias, stride=stride, padding=1, mask=mask)


def _sampled(x, offset, mask, weight, bias, stride):
    return sampled_deform_conv(x, offset, mask, weight, bias, stride=stride, padding=1)


NAMES = ("output", "grad input", "grad offset", "grad mask", "grad weight", "grad bias")


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["fractional", "integer", "border"])
def test_sampled_op_matches_torchvision(stride, kind):
    inputs = _op_case(2, 8, 6, 13, 19, stride, torch.float32, kind)
    ref = _run(_torchvision, inputs, stride)
    got = _run(_sampled, inputs, stride)
    for name, a, b in zip(NAMES, got, ref):
        assert a.shape == b.shape
        _close(a, b, name)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kind", ["integer", "border"])
def test_sampled_op_exact_in_float64(stride, kind):
    # In float64 the only difference left is summation order: agreement to ~1e-12 shows the
    # corners picked at kinks (integer positions, borders) are torchvision's.
    inputs = _op_case(2, 5, 3, 7, 9, stride, torch.float64, kind, seed=1)
    ref = _run(_torchvision, inputs, stride)
    got = _run(_sampled, inputs, stride)
    for name, a, b in zip(NAMES, got, ref):
        diff = (a - b).abs().max().item()
        assert diff <= 1e-10, f"{name}: max abs diff {diff}"


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (4, 5)])
def test_sampled_op_tiny_images(size):
    for stride in (1, 2):
        inputs = _op_case(2, 4, 4, *size, stride, torch.float64, "fractional", seed=2)
        for a, b in zip(_run(_sampled, inputs, stride), _run(_torchvision, inputs, stride)):
            assert (a - b).abs().max().item() <= 1e-10


def _levels_case(stride):
    """Three inputs of different sizes with their own offsets/masks, one weight and bias."""
    cases = [
        _op_case(2, 5, 4, h, w, stride, torch.float64, "fractional", seed=seed)
        for seed, (h, w) in enumerate(((9, 11), (5, 6), (3, 3)))
    ]
    return [[c[i] for c in cases] for i in range(3)] + [cases[0][3], cases[0][4]]


@pytest.mark.parametrize("stride", [1, 2])
def test_levels_call_matches_torchvision_per_input(stride):
    # One call over inputs of different sizes (taps first for stride 1, columns first for
    # stride 2) against one torchvision call per input: outputs and every gradient, float64.
    xs, offsets, masks, weight, bias = _levels_case(stride)

    def run(fn):
        leaves = [[t.clone().requires_grad_() for t in ts] for ts in (xs, offsets, masks)]
        w, b = weight.clone().requires_grad_(), bias.clone().requires_grad_()
        outs = fn(*leaves, w, b)
        g = torch.Generator().manual_seed(3)
        sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs).backward()
        grads = [t.grad for ts in leaves for t in ts] + [w.grad, b.grad]
        return [o.detach() for o in outs], grads

    def per_input(xs, offsets, masks, w, b):
        return [
            deform_conv2d(x, o, w, b, stride=stride, padding=1, mask=m)
            for x, o, m in zip(xs, offsets, masks)
        ]

    def levels(xs, offsets, masks, w, b):
        return sampled_deform_conv_levels(xs, offsets, masks, w, b, stride=stride, padding=1)

    (out, grads), (ref, ref_grads) = run(levels), run(per_input)
    for a, b in zip(out + grads, ref + ref_grads):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-10
    # Each output is a view of the rows of one (pixels, C_out) matrix: channels-last memory.
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in out)


@pytest.mark.parametrize("wanted", ["inputs", "offsets and masks", "weight and bias"])
def test_levels_call_gradient_of_a_subset(wanted):
    # The backward computes only what is asked for (e.g. a frozen weight); what it computes is
    # still torchvision's gradient.
    xs, offsets, masks, weight, bias = _levels_case(1)
    leaves = {
        "inputs": xs,
        "offsets and masks": offsets + masks,
        "weight and bias": [weight, bias],
    }[wanted]
    grads = {}
    for name in ("levels", "torchvision"):
        for t in leaves:
            t.grad = None
            t.requires_grad_()
        if name == "levels":
            outs = sampled_deform_conv_levels(xs, offsets, masks, weight, bias)
        else:
            outs = [
                deform_conv2d(x, o, weight, bias, padding=1, mask=m)
                for x, o, m in zip(xs, offsets, masks)
            ]
        sum(o.square().sum() for o in outs).backward()
        grads[name] = [t.grad for t in leaves]
    for a, b in zip(grads["levels"], grads["torchvision"]):
        assert (a - b).abs().max().item() <= 1e-10


def test_training_keeps_only_the_arguments_for_backward():
    # The table / columns and the bilinear weights are recomputed in the backward: what
    # autograd keeps from the forward is the arguments' storage and nothing else (without the
    # recomputation the taps-first table alone is 9x the output).
    for stride in (1, 2):
        xs, offsets, masks, weight, bias = _levels_case(stride)
        args = [t.requires_grad_() for t in [*xs, *offsets, *masks, weight, bias]]
        kept = set()

        def pack(t, kept=kept):
            kept.add(t.untyped_storage().data_ptr())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = sampled_deform_conv_levels(xs, offsets, masks, weight, bias, stride=stride)
        assert kept == {t.untyped_storage().data_ptr() for t in args}
        sum(o.sum() for o in outs).backward()
        assert all(t.grad is not None for t in args)


def test_gather_sum_gradcheck():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.randint(0, 7, (5, 4), generator=g)
    index[0] = 2  # repeated rows in one bag
    weight = torch.randn(5, 4, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: gather_sum(t, index, w), (table, weight))
    expected = (weight[:, :, None] * table[index]).sum(1)
    torch.testing.assert_close(gather_sum(table, index, weight), expected)


def test_deform_impl_choice():
    assert resolve_deform_impl("auto", torch.device("cpu")) == "sampled"
    assert resolve_deform_impl("auto", torch.device("cuda")) == "torchvision"
    assert resolve_deform_impl("torchvision", torch.device("cpu")) == "torchvision"
    with pytest.raises(ValueError, match="Unknown deform_impl"):
        resolve_deform_impl("fast", torch.device("cpu"))
    with pytest.raises(ValueError, match="Unknown deform_impl"):
        _tower("official", deform_impl="cuda")
    tower = _tower("official", deform_impl="torchvision")
    convs = [m for m in tower.modules() if hasattr(m, "deform_impl")]
    assert len(convs) == 1 + 2 * 4  # the tower, 2 blocks, 3 convs each
    assert {m.deform_impl for m in convs} == {"torchvision"}
    assert set(DEFORM_IMPLS) == {"auto", "torchvision", "sampled"}


def test_functional_impls_agree_under_autocast():
    x, offset, mask, weight, bias = _op_case(1, 8, 8, 9, 11, 1, torch.float32, "fractional")
    outs = {}
    for impl in ("torchvision", "sampled"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[impl] = modulated_deform_conv(x, offset.bfloat16(), mask, weight, bias, impl=impl)
    assert outs["sampled"].dtype == outs["torchvision"].dtype == torch.float32
    assert (outs["sampled"] - outs["torchvision"]).abs().max() <= TOL


# 32 channels, 16 GroupNorm groups: with one channel per group (16) a DCN bias is removed
# exactly by the normalisation and its gradient is pure rounding noise.
CT = 32


def _tower(offset_mode, deform_impl, c_in=CT, c_out=CT, blocks=2, seed=0):
    torch.manual_seed(seed)
    tower = DyHead(
        c_in,
        c_out,
        blocks,
        offset_mode=offset_mode,
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
        deform_impl=deform_impl,
    )
    for block in tower.blocks:
        perturb_block(block)
    return tower


def _tower_run(tower, feats, cotangent_seed=4):
    tower.zero_grad(set_to_none=True)
    inputs = [f.clone().requires_grad_() for f in feats]
    outs = tower(inputs)
    g = torch.Generator().manual_seed(cotangent_seed)
    loss = sum((o * torch.randn(o.shape, generator=g)).sum() for o in outs)
    loss.backward()
    grads = {f"input {i}": t.grad for i, t in enumerate(inputs)}
    grads.update({n: p.grad for n, p in tower.named_parameters()})
    return outs, grads


def _compare_towers(offset_mode, feats, c_in=CT, c_out=CT):
    ref_tower = _tower(offset_mode, "torchvision", c_in, c_out)
    fast_tower = _tower(offset_mode, "sampled", c_in, c_out)
    assert fast_tower.state_dict().keys() == ref_tower.state_dict().keys()
    ref_out, ref_grads = _tower_run(ref_tower, feats)
    out, grads = _tower_run(fast_tower, feats)
    assert len(out) == len(ref_out)
    for level, (o, r) in enumerate(zip(out, ref_out)):
        assert o.shape == r.shape == (feats[0].shape[0], c_out, *feats[level].shape[-2:])
        _close(o, r, f"level {level}")
    assert grads.keys() == ref_grads.keys()
    for name, g in grads.items():
        # A single level has no low/high branch: those weights get no gradient in either.
        assert (g is None) == (ref_grads[name] is None), name
        if g is not None:
            _close(g, ref_grads[name], f"grad of {name}")


@pytest.mark.parametrize("offset_mode", OFFSET_MODES)
def test_fast_tower_matches_reference_tower(offset_mode):
    # Odd sizes (13x19 -> 7x10 -> 4x5), a batch of 2, and two blocks.
    _compare_towers(offset_mode, pyramid(batch=2, channels=CT))


def test_fast_tower_batch_one_and_single_level():
    _compare_towers("official", pyramid(batch=1, channels=CT))
    _compare_towers("official", pyramid(batch=2, sizes=((9, 11),), channels=CT))


def test_fast_tower_changes_channels():
    # First block in_channels != out_channels.
    _compare_towers("topleft", pyramid(batch=2, channels=8), c_in=8, c_out=CT)


def test_fast_block_matches_per_level_forward():
    # forward_sampled (all levels at once) and the per-level loop with the same (sampled) op.
    block = make_block("official")
    block.deform_impl = "sampled"
    feats = pyramid()
    for o, r in zip(block(feats), block.forward_per_level(feats)):
        assert (o - r).abs().max().item() <= 1e-5


def test_fast_tower_cpu_autocast_bfloat16():
    feats = pyramid()
    # Default initialisation: bfloat16 close to float32.
    torch.manual_seed(0)
    tower = DyHead(
        C,
        C,
        2,
        offset_mode="official",
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
        deform_impl="sampled",
    )
    ref = tower(feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tower(feats)
    for o, r in zip(out, ref):
        assert o.shape == r.shape and torch.isfinite(o).all()
        assert (o.float() - r).abs().max() < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sum(o.float().square().mean() for o in tower(feats))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tower.parameters())
    # Offsets of several pixels predicted in bfloat16 move the samples (both implementations
    # alike, ~0.2 from float32); beyond that the two implementations differ only by the
    # bfloat16 rounding of the sampled path's matrix products (torchvision's stay float32).
    feats = pyramid(channels=CT)
    outs = {}
    for impl in ("torchvision", "sampled"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[impl] = _tower("official", impl)(feats)
    for a, b in zip(outs["sampled"], outs["torchvision"]):
        assert a.dtype == b.dtype and (a.float() - b.float()).abs().max() < 0.05


@pytest.mark.cuda
@pytest.mark.parametrize("deform_impl", ["sampled", "torchvision"])
def test_cuda_matches_cpu_reference_and_autocast(deform_impl):
    feats = pyramid(channels=CT)
    ref_out, ref_grads = _tower_run(_tower("official", "torchvision"), feats)
    tower = _tower("official", deform_impl).cuda()
    out, grads = _tower_run(tower, [f.cuda() for f in feats])
    for o, r in zip(out, ref_out):
        _close(o.cpu(), r, "output")
    for name, g in grads.items():
        _close(g.cpu(), ref_grads[name], name)
    with torch.autocast("cuda", dtype=torch.float16):
        out = tower([f.cuda() for f in feats])
    for o, r in zip(out, ref_out):
        assert (o.float().cpu() - r).abs().max() < 0.05


def test_benchmark_runs_on_tiny_sizes(capsys):
    argv = "--sizes 64x64 --levels 3 --channels 32 --blocks 1 --repeats 1 --warmup 0 --device cpu"
    results = benchmark_main(argv.split() + ["--which", "a,b,e"])
    text = capsys.readouterr().out
    assert "ratio reference / project" in text and "max abs diff of gradients" in text
    by_key = {r["benchmark"]: r for r in results}
    assert set(by_key) == {"a", "b", "e/block", "e/guard", "e/convs"}
    assert by_key["a"]["ratio"] > 0
    assert 0 < by_key["e/guard"]["ratio"] < 1
    assert 0 < by_key["b"]["max_abs_diff"]["outputs"] < TOL
    assert 0 < by_key["b"]["max_abs_diff"]["gradients"] < TOL


@pytest.mark.slow
def test_benchmark_detector_inference_and_training_step(capsys):
    needs_detectron2()
    argv = "--which c,d --detector-size 128x192 --train-size 128x128 --repeats 1 --warmup 0"
    results = benchmark_main(argv.split() + ["--device", "cpu"])
    text = capsys.readouterr().out
    by_key = {r["benchmark"]: r for r in results}
    assert set(by_key) == {"c", "d"}, text
    assert by_key["c"]["ratio"] > 0 and by_key["d"]["ratio"] > 0
    # Same weights and inputs on both sides: the sampled DyHead and the vectorised assignment
    # reproduce the per-level torchvision DyHead and the per-box assignment loop.
    assert 0 <= by_key["c"]["max_abs_diff"]["DyHead outputs"] < 1e-3
    assert 0 <= by_key["d"]["max_abs_diff"]["losses"] < 1e-4
    assert 0 <= by_key["d"]["max_abs_diff"]["gradients"] < 1e-3
