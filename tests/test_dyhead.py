"""DyHeadBlock / DyHead against the literal reference in ``reference_dyhead.py``, and behaviour."""

import pytest
import torch

from dyhead_d2 import DyHead, DyHeadBlock
from dyhead_d2.layers import OFFSET_MODES, read_high_branch_offset

from .dyhead_inputs import C, make_block, make_tower, pyramid
from .reference_dyhead import read_offset, reference_block


@pytest.mark.parametrize("offset_mode", OFFSET_MODES)
def test_block_matches_literal_reference(offset_mode):
    feats = pyramid()
    ref = reference_block(make_block(offset_mode), feats, offset_mode)
    # Both deformable-conv implementations (per-level loop with torchvision's op; forward_sampled).
    for impl in ("torchvision", "sampled"):
        out = make_block(offset_mode, deform_impl=impl)(feats)
        assert len(out) == len(ref) == 3
        for level, (o, r) in enumerate(zip(out, ref)):
            assert o.shape == feats[level].shape
            diff = (o.double() - r).abs().max().item()
            assert diff <= 1e-5, f"{impl}, level {level}: max abs diff {diff}"


@pytest.mark.parametrize("impl", ["torchvision", "sampled"])
def test_block_without_dcn_bias_matches_reference(impl):
    block = make_block("topleft", dcn_bias=False, init_style="mmdet", deform_impl=impl)
    feats = pyramid(batch=1, sizes=((8, 6), (4, 3)))
    for o, r in zip(block(feats), reference_block(block, feats, "topleft")):
        assert (o.double() - r).abs().max().item() <= 1e-5


def test_official_reading_is_the_kernels_memory_walk():
    # (C=2, H=5, W=3) map read as (2, 3, 2): the kernel takes flat elements 0..11 of each image.
    t = torch.arange(2 * 2 * 5 * 3, dtype=torch.float32).view(2, 2, 5, 3)
    got = read_high_branch_offset(t, (3, 2), "official")
    assert torch.equal(got[0].flatten(), torch.arange(12, dtype=torch.float32))
    assert torch.equal(got[1].flatten(), torch.arange(30, 42, dtype=torch.float32))
    for mode in OFFSET_MODES:
        for is_mask in (False, True):
            got = read_high_branch_offset(t, (3, 2), mode, is_mask=is_mask)
            assert torch.equal(got[1], read_offset(t[1], 3, 2, mode, is_mask))
    # MMDetection's unreleased main branch run by mmcv: offsets as the authors' kernel reads
    # them, masks top-left.
    assert torch.equal(
        read_high_branch_offset(t, (3, 2), "mmdet_main_slice"),
        read_high_branch_offset(t, (3, 2), "official"),
    )
    assert torch.equal(
        read_high_branch_offset(t, (3, 2), "mmdet_main_slice", is_mask=True),
        read_high_branch_offset(t, (3, 2), "topleft"),
    )
    assert torch.equal(read_high_branch_offset(t, (3, 2), "topleft")[0, 1], t[0, 1, :3, :2])
    assert torch.equal(read_high_branch_offset(t, (3, 2), "aligned")[0, 0], t[0, 0, ::2, ::2])


def test_modes_differ_only_where_the_high_branch_runs():
    feats = pyramid()
    outs = {m: make_block(m)(feats) for m in OFFSET_MODES}
    for a in OFFSET_MODES:
        for b in OFFSET_MODES:
            if a == b:
                continue
            # Levels 0 and 1 have a high branch, so the reading matters there ...
            for level in (0, 1):
                assert (outs[a][level] - outs[b][level]).abs().max() > 1e-3, (a, b, level)
            # ... the coarsest level has none, so its output cannot depend on the mode.
            assert torch.equal(outs[a][2], outs[b][2])


def test_modes_identical_on_single_level():
    feats = pyramid(sizes=((9, 11),))
    outs = [make_block(m)(feats)[0] for m in OFFSET_MODES]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


@pytest.mark.parametrize("offset_mode", OFFSET_MODES)
def test_batch_is_per_image(offset_mode):
    # The official reading is per image: a batch must give what each image gives alone.
    block = make_block(offset_mode)
    feats = pyramid(batch=3)
    batched = block(feats)
    for n in range(3):
        single = block([f[n : n + 1] for f in feats])
        for b, s in zip(batched, single):
            torch.testing.assert_close(b[n : n + 1], s, atol=1e-5, rtol=1e-5)


def test_tower_shapes_any_levels():
    # 32 channels: with 16 GroupNorm groups a 1x1 level then still has 2 values per group.
    tower = DyHead(
        32,
        32,
        2,
        offset_mode="official",
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
    )
    for sizes in [((13, 19),), ((13, 19), (7, 10)), ((16, 16), (8, 8), (4, 4), (2, 2), (1, 1))]:
        feats = pyramid(batch=1, sizes=sizes, channels=32)
        out = tower(feats)
        assert [o.shape for o in out] == [f.shape for f in feats]


def test_tower_changes_channels():
    tower = DyHead(
        8, 32, 2, offset_mode="aligned", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
    )
    out = tower(pyramid(channels=8))
    assert [tuple(o.shape[:2]) for o in out] == [(2, 32)] * 3


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    tower = make_tower()
    feats = [f.requires_grad_() for f in pyramid()]
    loss = sum((o**2).mean() for o in tower(feats))
    loss.backward()
    for name, p in tower.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    for f in feats:
        assert f.grad.abs().sum() > 0


EXPECTED_BLOCK_PARAMS = {
    "offset_conv.weight": (27, C, 3, 3),
    "offset_conv.bias": (27,),
    **{
        f"conv_{b}.{k}": s
        for b in ("high", "mid", "low")
        for k, s in {
            "conv.weight": (C, C, 3, 3),
            "conv.bias": (C,),
            "norm.weight": (C,),
            "norm.bias": (C,),
        }.items()
    },
    "scale_attn.conv.weight": (1, C, 1, 1),
    "scale_attn.conv.bias": (1,),
    "task_attn.fc1.weight": (C // 4, C),
    "task_attn.fc1.bias": (C // 4,),
    "task_attn.fc2.weight": (4 * C, C // 4),
    "task_attn.fc2.bias": (4 * C,),
}


def test_parameter_names_and_shapes_are_stable():
    tower = make_tower()
    expected = {f"blocks.{i}.{k}": v for i in range(2) for k, v in EXPECTED_BLOCK_PARAMS.items()}
    got = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    assert got == expected
    no_bias = make_tower(dcn_bias=False)
    missing = set(expected) - set(no_bias.state_dict())
    assert missing == {
        f"blocks.{i}.conv_{b}.conv.bias" for i in range(2) for b in ("high", "mid", "low")
    }


def test_initialisation_per_port():
    torch.manual_seed(0)
    c = 64
    authors = DyHeadBlock(
        c, c, offset_mode="official", dcn_bias=True, zero_init_offset=False, init_style="authors"
    )
    mmdet = DyHeadBlock(
        c, c, offset_mode="topleft", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
    )
    mmdet_repro = DyHeadBlock(
        c, c, offset_mode="topleft", dcn_bias=False, zero_init_offset=False, init_style="mmdet"
    )
    bound = 1 / (c * 9) ** 0.5
    for b in (authors, mmdet):
        for conv in (b.conv_high, b.conv_mid, b.conv_low):
            w = conv.conv.weight
            assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # uniform(-bound, bound)
        assert torch.equal(b.scale_attn.conv.bias, torch.zeros(1))
        assert 0.005 < b.scale_attn.conv.weight.std() < 0.015
    assert torch.equal(authors.conv_mid.conv.bias, torch.zeros(c))
    # Authors: offset conv and DyReLU keep PyTorch's default init, |w| <= 1/sqrt(fan_in) uniform.
    for layer, fan_in in ((authors.offset_conv, c * 9), (authors.task_attn.fc1, c)):
        w_bound = fan_in**-0.5
        assert layer.weight.abs().max() <= w_bound
        assert abs(layer.weight.std() / (w_bound / 3**0.5) - 1) < 0.1
        assert layer.bias.abs().sum() > 0
    # MMDetection: every plain conv / DyReLU layer ~ N(0, 0.01), zero bias; offset zeroed if asked.
    for lin in (mmdet.task_attn.fc1, mmdet.task_attn.fc2):
        assert 0.005 < lin.weight.std() < 0.015 and torch.equal(
            lin.bias, torch.zeros_like(lin.bias)
        )
    assert torch.equal(mmdet.offset_conv.weight, torch.zeros_like(mmdet.offset_conv.weight))
    assert torch.equal(mmdet.offset_conv.bias, torch.zeros(27))
    assert 0.005 < mmdet_repro.offset_conv.weight.std() < 0.015


def test_bad_input_errors():
    tower = make_tower()
    with pytest.raises(ValueError, match="empty"):
        tower([])
    with pytest.raises(ValueError, match="level 1 has 8 channels; expected 16"):
        tower([torch.randn(1, C, 8, 8), torch.randn(1, 8, 4, 4)])
    with pytest.raises(
        ValueError, match="level 2 is 3x3 but level 1 is 7x10, so level 2 must be 4x5"
    ):
        tower(pyramid(sizes=((13, 19), (7, 10), (3, 3))))
    with pytest.raises(ValueError, match="level 1 has batch size 2"):
        tower([torch.randn(1, C, 8, 8), torch.randn(2, C, 4, 4)])
    with pytest.raises(ValueError, match="level 0 has shape"):
        tower([torch.randn(C, 8, 8)])
    with pytest.raises(ValueError, match="Unknown offset_mode 'mmdet'"):
        make_tower(offset_mode="mmdet")
    with pytest.raises(ValueError, match="Unknown init_style"):
        make_tower(init_style="detectron2")
    with pytest.raises(TypeError):
        DyHead(C, C, 2)  # the port-specific choices have no defaults


def test_cpu_autocast_bfloat16_close_to_float32():
    tower = make_tower()
    feats = pyramid()
    ref = tower(feats)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tower(feats)
    for o, r in zip(out, ref):
        assert o.shape == r.shape and torch.isfinite(o).all()
        # bfloat16 keeps ~3 significant digits; the outputs are O(1).
        assert (o.float() - r).abs().max() < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = sum(o.float().square().mean() for o in tower(feats))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in tower.parameters())


@pytest.mark.cuda
def test_cuda_float32_and_autocast_float16(tf32_off):
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    tower = make_tower()
    feats = pyramid()
    ref = tower(feats)
    tower_cuda = tower.cuda()
    feats_cuda = [f.cuda() for f in feats]
    out = tower_cuda(feats_cuda)
    for o, r in zip(out, ref):
        torch.testing.assert_close(o.cpu(), r, atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        out = tower_cuda(feats_cuda)
    for o, r in zip(out, ref):
        assert (o.float().cpu() - r).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("offset_mode", OFFSET_MODES)
def test_full_width_block_matches_literal_reference(offset_mode):
    # The published width (256 channels, 16 GroupNorm groups of 16) on the P3-P7 pyramid of a
    # 128x160 image, against the same literal reference.
    torch.manual_seed(0)
    block = DyHeadBlock(
        256,
        256,
        offset_mode=offset_mode,
        dcn_bias=True,
        zero_init_offset=False,
        init_style="authors",
    )
    feats = pyramid(batch=1, sizes=((16, 20), (8, 10), (4, 5), (2, 3), (1, 2)), channels=256)
    out = block(feats)
    ref = reference_block(block, feats, offset_mode)
    for level, (o, r) in enumerate(zip(out, ref)):
        diff = (o.double() - r).abs().max().item()
        assert diff <= 1e-5, f"level {level}: max abs diff {diff}"


def test_official_reading_by_hand():
    # Two images of a (2, 3, 4) map numbered 0..23 and 24..47, read at the coarser size 2x2:
    # image 1's first 2*2*2 values are 24..31, whatever (H, W) they came from; offsets and masks
    # alike. "topleft" and the post-3.3.0 MMDetection mask slice take rows 0-1, columns 0-1.
    t = torch.arange(48, dtype=torch.float32).view(2, 2, 3, 4)
    raw = torch.tensor([[[24.0, 25], [26, 27]], [[28, 29], [30, 31]]])
    corner = torch.tensor([[[24.0, 25], [28, 29]], [[36, 37], [40, 41]]])
    for is_mask in (False, True):
        assert torch.equal(read_high_branch_offset(t, (2, 2), "official", is_mask=is_mask)[1], raw)
        got = read_high_branch_offset(t, (2, 2), "topleft", is_mask=is_mask)[1]
        assert torch.equal(got, corner)
    assert torch.equal(read_high_branch_offset(t, (2, 2), "mmdet_main_slice")[1], raw)
    got = read_high_branch_offset(t, (2, 2), "mmdet_main_slice", is_mask=True)[1]
    assert torch.equal(got, corner)
