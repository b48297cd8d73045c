"""The deformable bottleneck block and ResNet stages against Detectron2's own: parameter names and
shapes (Detectron2's classes build on CPU even where their op cannot run), outputs and gradients
against Detectron2's forward recipe on torchvision's deform_conv2d (float64), Detectron2's block
itself where its op runs (DCNv1 on CPU, DCNv2 on CUDA)."""

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

from . import needs_detectron2

needs_detectron2()

from detectron2.config import get_cfg  # noqa: E402
from detectron2.layers import ShapeSpec  # noqa: E402
from detectron2.modeling.backbone import resnet as detectron2_resnet  # noqa: E402

from dyhead_d2.layers import DeformConv  # noqa: E402
from dyhead_d2.modeling import DeformBottleneckBlock, make_resnet_stages  # noqa: E402

TOL = 1e-8


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


BLOCKS = {
    # name: constructor arguments of both blocks (in 16 -> out 32 channels)
    "dcnv2_resnext": dict(
        bottleneck_channels=16, stride=2, num_groups=4, stride_in_1x1=False,
        deform_modulated=True, deform_num_groups=1,
    ),
    "dcnv2_offset_groups": dict(
        bottleneck_channels=16, stride=1, num_groups=1, stride_in_1x1=True,
        deform_modulated=True, deform_num_groups=2,
    ),
    "dcnv2_dilated": dict(
        bottleneck_channels=8, stride=1, num_groups=2, dilation=2, deform_modulated=True,
    ),
    "dcnv1_caffe": dict(
        bottleneck_channels=8, stride=2, num_groups=1, stride_in_1x1=True,
        deform_modulated=False,
    ),
}  # fmt: skip


def _pair(name, norm="BN"):
    """Detectron2's block with random weights (offset conv included, so that the offsets and
    mask are far from their zero initialisation) and ours with its state dict, float64."""
    torch.manual_seed(0)
    kwargs = dict(BLOCKS[name], norm=norm)
    theirs = detectron2_resnet.DeformBottleneckBlock(16, 32, **kwargs).double()
    ours = DeformBottleneckBlock(16, 32, **kwargs).double()
    with torch.no_grad():
        theirs.conv2_offset.weight.normal_(0.0, 0.2)
        theirs.conv2_offset.bias.normal_(0.0, 1.0)
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs.eval(), ours.eval()


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_parameters_are_detectron2s(name):
    theirs, ours = _pair(name)
    assert _shapes(ours) == _shapes(theirs)
    modulated = BLOCKS[name]["deform_modulated"]
    groups = BLOCKS[name].get("deform_num_groups", 1)
    keys = set(ours.state_dict())
    assert {"conv2.weight", "conv2_offset.weight", "conv2_offset.bias"} <= keys
    assert {"conv2.norm.weight", "conv2.norm.bias", "conv2.norm.running_mean"} <= keys
    assert "conv2.bias" not in keys
    assert ours.conv2_offset.weight.shape[0] == (27 if modulated else 18) * groups


def test_initialisation_is_detectron2s():
    # Zero offset conv, MSRA fill (std sqrt(2 / fan_out)) of the deformable weight.
    torch.manual_seed(0)
    block = DeformBottleneckBlock(64, 256, bottleneck_channels=64, deform_modulated=True)
    assert not block.conv2_offset.weight.any() and not block.conv2_offset.bias.any()
    std = block.conv2.weight.std().item()
    assert abs(std - (2.0 / (64 * 9)) ** 0.5) < 0.1 * std


def _detectron2_recipe(block, x):
    """Detectron2's DeformBottleneckBlock.forward, step by step, with torchvision's
    deform_conv2d in place of Detectron2's kernel (same offset and mask layout)."""
    out = F.relu(block.conv1(x))
    conv = block.conv2
    if block.deform_modulated:
        offset_x, offset_y, mask = torch.chunk(block.conv2_offset(out), 3, dim=1)
        offset = torch.cat((offset_x, offset_y), dim=1)
        mask = mask.sigmoid()
    else:
        offset, mask = block.conv2_offset(out), None
    out = deform_conv2d(
        out, offset, conv.weight, None, conv.stride, conv.padding, conv.dilation, mask=mask
    )
    out = F.relu(conv.norm(out))
    out = block.conv3(out)
    shortcut = x if block.shortcut is None else block.shortcut(x)
    return F.relu(out + shortcut)


@pytest.mark.parametrize("impl", ["sampled", "torchvision"])
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_outputs_and_gradients_equal_detectron2s_recipe(name, impl):
    theirs, ours = _pair(name)
    ours.conv2.deform_impl = impl
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 13, 11, generator=g, dtype=torch.float64)
    cotangent = None
    results = []
    for block, fn in ((theirs, _detectron2_recipe), (ours, lambda b, t: b(t))):
        inp = x.clone().requires_grad_()
        out = fn(block, inp)
        if cotangent is None:
            cotangent = torch.randn(out.shape, generator=g, dtype=out.dtype)
        params = [p for _, p in sorted(block.named_parameters())]
        grads = torch.autograd.grad(out, [inp, *params], cotangent)
        results.append((out.detach(), grads, [n for n, _ in sorted(block.named_parameters())]))
    (out_ref, grads_ref, names), (out, grads, our_names) = results
    assert names == our_names
    assert (out - out_ref).abs().max().item() <= TOL
    for what, a, b in zip(["input", *names], grads, grads_ref):
        diff = (a - b).abs().max().item()
        assert diff <= TOL, f"grad {what}: max abs diff {diff}"
    # The offsets were far from zero: the deformable sampling was exercised.
    assert ours.conv2_offset.bias.abs().max() > 0.5


def test_dcnv1_equals_detectron2s_block_on_cpu():
    # Detectron2 runs its unmodulated convolution on CPU (through torchvision): its own block.
    theirs, ours = _pair("dcnv1_caffe")
    x = torch.randn(2, 16, 13, 11, dtype=torch.float64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() <= TOL


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Detectron2's DCNv2 kernel needs CUDA")
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_equals_detectron2s_block_on_cuda(name):
    theirs, ours = _pair(name)
    theirs, ours = theirs.float().cuda(), ours.float().cuda()
    x = torch.randn(2, 16, 13, 11, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


def _detectron2_resnet(**resnets):
    """Detectron2's build_resnet_backbone with MODEL.RESNETS.<KEY> = value."""
    cfg = get_cfg()
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    for key, value in resnets.items():
        setattr(cfg.MODEL.RESNETS, key.upper(), value)
    return detectron2_resnet.build_resnet_backbone(cfg, ShapeSpec(channels=3))


def _our_resnet(**kwargs):
    stages = make_resnet_stages(**kwargs)
    stem = detectron2_resnet.BasicStem(3, kwargs.get("stem_out_channels", 64), norm="FrozenBN")
    return detectron2_resnet.ResNet(stem, stages, out_features=["res3", "res4", "res5"])


STAGES = {
    "R50_dcnv1_c3-c5": dict(depth=50, deform_on_per_stage=[False, True, True, True]),
    "R50_dcnv2_c5_groups2_dilated": dict(
        depth=50,
        deform_on_per_stage=[False, False, False, True],
        deform_modulated=True,
        deform_num_groups=2,
        res5_dilation=2,
    ),
    "X50_32x4d_dcnv2_c4-c5": dict(
        depth=50,
        num_groups=32,
        width_per_group=4,
        stride_in_1x1=False,
        deform_on_per_stage=[False, False, True, True],
        deform_modulated=True,
    ),
    "R18": dict(depth=18, res2_out_channels=64),
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stages_are_those_of_build_resnet_backbone(name):
    # Same parameter names and shapes as the ResNet Detectron2 builds from MODEL.RESNETS, so its
    # checkpoints (DCN ones included) load strictly; deformable blocks where it has them.
    kwargs = STAGES[name]
    theirs = _detectron2_resnet(**kwargs)
    ours = _our_resnet(**kwargs)
    assert _shapes(ours) == _shapes(theirs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    deform = list(kwargs.get("deform_on_per_stage", [False] * 4))
    for stage, on in zip((ours.res2, ours.res3, ours.res4, ours.res5), deform):
        assert all(isinstance(b, DeformBottleneckBlock) == on for b in stage)
    theirs_deform = [type(b).__name__ for b in theirs.res5]
    assert all((t == "DeformBottleneckBlock") == deform[3] for t in theirs_deform)
    assert ours.output_shape() == theirs.output_shape()


def test_resnext101_64x4d_dcn_stages_are_detectron2s():
    # The configs' X-101-64x4d-DCN backbone: 64 groups of 4 channels, DCNv2 in res3-res5.
    kwargs = dict(
        depth=101,
        num_groups=64,
        width_per_group=4,
        stride_in_1x1=False,
        deform_on_per_stage=[False, True, True, True],
        deform_modulated=True,
    )
    theirs, ours = _detectron2_resnet(**kwargs), _our_resnet(**kwargs)
    assert _shapes(ours) == _shapes(theirs)
    assert _shapes(ours)["res4.22.conv2.weight"] == (1024, 16, 3, 3)
    assert _shapes(ours)["res5.0.conv2_offset.weight"] == (27, 2048, 3, 3)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    deform = [m for m in ours.modules() if isinstance(m, DeformConv)]
    assert len(deform) == 4 + 23 + 3 and all(m.groups == 64 for m in deform)


def test_stage_options_are_checked():
    with pytest.raises(ValueError, match="depth=42"):
        make_resnet_stages(42)
    with pytest.raises(ValueError, match="one entry per stage"):
        make_resnet_stages(50, deform_on_per_stage=[True, True, True])
    with pytest.raises(ValueError, match="deform_on_per_stage"):
        make_resnet_stages(18, res2_out_channels=64, deform_on_per_stage=[False, True, True, True])


def test_deformable_resnet_trains_on_cpu():
    # Detectron2's DCNv2 raises on CPU; this one trains: a step changes the offset conv.
    torch.manual_seed(0)
    kwargs = dict(
        depth=50,
        num_groups=4,
        width_per_group=8,
        stem_out_channels=32,
        res2_out_channels=64,
        stride_in_1x1=False,
        norm="GN",
        deform_on_per_stage=[False, True, True, True],
        deform_modulated=True,
    )
    model = _our_resnet(**kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    offset_conv = model.res4[0].conv2_offset
    before = offset_conv.weight.detach().clone()
    out = model(torch.randn(2, 3, 64, 64))
    assert [tuple(out[k].shape) for k in ("res3", "res4", "res5")] == [
        (2, 128, 8, 8),
        (2, 256, 4, 4),
        (2, 512, 2, 2),
    ]
    sum(v.square().mean() for v in out.values()).backward()
    assert offset_conv.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, offset_conv.weight)
