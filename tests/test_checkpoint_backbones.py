"""DyHeadCheckpointer: ImageNet backbones (torchvision ResNet, official Swin), MMDetection's Swin,
MSRA's Caffe2 R-50.pkl and this project's own checkpoints, loaded from files as train_net.py
loads ``train.init_checkpoint``."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from . import needs_detectron2  # noqa: E402

needs_detectron2()
torchvision = pytest.importorskip("torchvision")

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.config import instantiate  # noqa: E402

from dyhead_d2.checkpoint import (  # noqa: E402
    CheckpointConversionError,
    DyHeadCheckpointer,
    convert_checkpoint,
)
from dyhead_d2.config import load_config  # noqa: E402

from .checkpoint_layouts import Randn  # noqa: E402
from .d2_models import tiny_atss_config  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "COCO"
BOTTOM_UP = "backbone.fpn.bottom_up."


class RecordingCheckpointer(DyHeadCheckpointer):
    """Keeps what Detectron2 reports after loading (missing / unexpected / mis-shaped keys)."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_file(model, path):
    checkpointer = RecordingCheckpointer(model)
    checkpointer.load(str(path))
    return checkpointer.incompatible


def build_config(name, overrides=(), seed=0):
    cfg = load_config(str(CONFIGS / name), list(overrides))
    torch.manual_seed(seed)
    return instantiate(cfg.model).eval()


# ---------------------------------------------------------------------------------------------
# torchvision ResNet-50 (IMAGENET1K_V1 layout: a bare state dict with fc) -> the "simple" config.


@pytest.mark.parametrize("with_counters", [True, False], ids=["counters", "old-file"])
def test_torchvision_resnet(tmp_path, with_counters):
    torch.manual_seed(3)
    net = torchvision.models.resnet50().eval()
    r = Randn(3, scale=0.1)
    with torch.no_grad():  # statistics and affine away from their initial values
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(r(*m.running_mean.shape))
                m.running_var.copy_(1 + r(*m.running_var.shape).abs())
                m.bias.copy_(r(*m.bias.shape))
    sd = net.state_dict()
    if not with_counters:  # torchvision's older files predate BatchNorm's batch counter
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "resnet50.pth")

    model = build_config("atss_dyhead_R_50_FPN_1x.py", ["model.backbone.dyhead.num_blocks=1"])
    incompatible = load_file(model, tmp_path / "resnet50.pth")
    # Everything but the ResNet is left to the config's initialisation, and nothing else.
    outside = {k for k in model.state_dict() if not k.startswith(BOTTOM_UP)}
    assert set(incompatible.missing_keys) == outside
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes

    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model.backbone.fpn.bottom_up(x)
        y = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x)))))
        for name, layer in (("res3", net.layer2), ("res4", net.layer3), ("res5", net.layer4)):
            y = layer(y)
            torch.testing.assert_close(ours[name], y, rtol=1e-4, atol=1e-4)


def test_resnet_of_another_depth_is_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    model = build_config("atss_dyhead_R_50_FPN_1x.py", ["model.backbone.dyhead.num_blocks=1"])
    with pytest.raises(CheckpointConversionError) as err:
        load_file(model, tmp_path / "resnet18.pth")
    msg = str(err.value)
    assert "shape mismatch: layer1.0.conv1.weight -> backbone.fpn.bottom_up.res2.0.conv1" in msg
    assert "not filled by the checkpoint: backbone.fpn.bottom_up.res2.0.conv3.weight" in msg


# ---------------------------------------------------------------------------------------------
# Official Swin ImageNet weights ({"model": ...}) -> Detectron2's SwinTransformer.

EMBED, DEPTHS, HEADS, WINDOW = 16, (2, 2, 2, 2), (1, 2, 2, 4), 4


def tiny_swin_atss(seed=0, dcn_bias=True):
    cfg = tiny_atss_config(bottom_up="swin")
    cfg.backbone.fpn.bottom_up.depths = DEPTHS
    cfg.backbone.dyhead.dcn_bias = dcn_bias
    torch.manual_seed(seed)
    return instantiate(cfg).eval()


def official_swin_checkpoint(model):
    """The official repository's names and shapes (swin_transformer.py) for the tiny Swin."""
    r, sd = Randn(5, scale=0.2), {}
    sd["patch_embed.proj.weight"] = r(EMBED, 3, 4, 4)
    sd["patch_embed.proj.bias"] = r(EMBED)
    sd["patch_embed.norm.weight"], sd["patch_embed.norm.bias"] = 1 + r(EMBED), r(EMBED)
    own = model.backbone.fpn.bottom_up.state_dict()
    for i, (depth, heads) in enumerate(zip(DEPTHS, HEADS)):
        d = EMBED * 2**i
        for j in range(depth):
            b = f"layers.{i}.blocks.{j}."
            sd[b + "norm1.weight"], sd[b + "norm1.bias"] = 1 + r(d), r(d)
            sd[b + "attn.relative_position_bias_table"] = r((2 * WINDOW - 1) ** 2, heads)
            # A constant of the window size, the same in both implementations.
            sd[b + "attn.relative_position_index"] = own[b + "attn.relative_position_index"]
            sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"] = r(3 * d, d), r(3 * d)
            sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"] = r(d, d), r(d)
            sd[b + "norm2.weight"], sd[b + "norm2.bias"] = 1 + r(d), r(d)
            sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"] = r(4 * d, d), r(4 * d)
            sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"] = r(d, 4 * d), r(d)
            if j % 2 == 1:  # shifted windows: a mask for the 224x224 pre-training size
                n_windows = (224 // 4 // 2**i // WINDOW) ** 2
                sd[b + "attn_mask"] = torch.zeros(n_windows, WINDOW**2, WINDOW**2)
        if i < len(DEPTHS) - 1:
            sd[f"layers.{i}.downsample.reduction.weight"] = r(2 * d, 4 * d)
            sd[f"layers.{i}.downsample.norm.weight"] = 1 + r(4 * d)
            sd[f"layers.{i}.downsample.norm.bias"] = r(4 * d)
    last = EMBED * 2 ** (len(DEPTHS) - 1)
    sd["norm.weight"], sd["norm.bias"] = 1 + r(last), r(last)
    sd["head.weight"], sd["head.bias"] = r(1000, last), r(1000)
    return {"model": sd}


def test_official_swin(tmp_path):
    model = tiny_swin_atss(seed=0)
    ckpt = official_swin_checkpoint(model)
    torch.save(ckpt, tmp_path / "swin_tiny.pth")
    incompatible = load_file(model, tmp_path / "swin_tiny.pth")
    norms = {f"{BOTTOM_UP}norm{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    outside = {k for k in model.state_dict() if not k.startswith(BOTTOM_UP)}
    assert set(incompatible.missing_keys) == outside | norms
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes

    # By hand: the names are Detectron2's; the classifier, its norm and the masks are not used.
    by_hand = tiny_swin_atss(seed=1)
    unused = {"norm.weight", "norm.bias", "head.weight", "head.bias"}
    kept = {k: v for k, v in ckpt["model"].items() if k not in unused and "attn_mask" not in k}
    missing, unexpected = by_hand.backbone.fpn.bottom_up.load_state_dict(kept, strict=False)
    assert {BOTTOM_UP + k for k in missing} == norms and not unexpected
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, want = model.backbone.fpn.bottom_up(x), by_hand.backbone.fpn.bottom_up(x)
    for k in want:
        assert torch.equal(got[k], want[k])


# ---------------------------------------------------------------------------------------------
# MMDetection's Swin (ATSS + DyHead Swin-L layout) -> Detectron2's SwinTransformer.

# MMDetection's nn.Unfold merges a 2x2 patch as features c * 4 + t, taps t in the order
# (0,0), (0,1), (1,0), (1,1) (row, column); Swin as t * C + c with taps (0,0), (1,0), (0,1), (1,1).
UNFOLD_TAP_TO_SWIN_TAP = (0, 2, 1, 3)


def to_unfold_order(t):
    c = t.shape[-1] // 4
    index = [UNFOLD_TAP_TO_SWIN_TAP[tap] * c + ch for ch in range(c) for tap in range(4)]
    return t[..., index]


def mmdet_swin_atss_checkpoint(model):
    """``model``'s weights as MMDetection saves an ATSS + FPN + DyHead with its Swin backbone."""
    sd = {}
    for k, v in model.backbone.fpn.bottom_up.state_dict().items():
        k = k.replace("patch_embed.proj.", "patch_embed.projection.")
        k = k.replace(".attn.", ".attn.w_msa.").replace(".mlp.fc1.", ".ffn.layers.0.0.")
        k = k.replace(".mlp.fc2.", ".ffn.layers.1.")
        if ".downsample." in k:
            v = to_unfold_order(v)
        sd["backbone." + k.replace("layers.", "stages.", 1)] = v
    fpn = model.backbone.fpn
    for k, level in enumerate((3, 4, 5)):
        for p in ("weight", "bias"):
            sd[f"neck.0.lateral_convs.{k}.conv.{p}"] = getattr(
                fpn, f"fpn_lateral{level}"
            ).get_parameter(p)
            sd[f"neck.0.fpn_convs.{k}.conv.{p}"] = getattr(fpn, f"fpn_output{level}").get_parameter(
                p
            )
    for k, conv in ((3, fpn.top_block.p6), (4, fpn.top_block.p7)):
        sd[f"neck.0.fpn_convs.{k}.conv.weight"], sd[f"neck.0.fpn_convs.{k}.conv.bias"] = (
            conv.weight,
            conv.bias,
        )
    block = model.backbone.dyhead.blocks[0]
    n = "neck.1.dyhead_blocks.0."
    for b in ("high", "mid", "low"):
        branch = getattr(block, f"conv_{b}")
        sd[n + f"spatial_conv_{b}.conv.weight"] = branch.conv.weight
        sd[n + f"spatial_conv_{b}.norm.weight"] = branch.norm.weight
        sd[n + f"spatial_conv_{b}.norm.bias"] = branch.norm.bias
    sd[n + "spatial_conv_offset.weight"] = block.offset_conv.weight
    sd[n + "spatial_conv_offset.bias"] = block.offset_conv.bias
    sd[n + "scale_attn_module.1.weight"] = block.scale_attn.conv.weight
    sd[n + "scale_attn_module.1.bias"] = block.scale_attn.conv.bias
    for i, fc in ((1, block.task_attn.fc1), (2, block.task_attn.fc2)):
        sd[n + f"task_attn_module.conv{i}.conv.weight"] = fc.weight[:, :, None, None]
        sd[n + f"task_attn_module.conv{i}.conv.bias"] = fc.bias
    head = model.head
    for ours, theirs in (("cls_logits", "cls"), ("bbox_pred", "reg"), ("centerness", "centerness")):
        sd[f"bbox_head.atss_{theirs}.weight"] = getattr(head, ours).weight
        sd[f"bbox_head.atss_{theirs}.bias"] = getattr(head, ours).bias
    for level, scale in enumerate(head.scales):
        sd[f"bbox_head.scales.{level}.scale"] = scale.scale.reshape(())
    return {"state_dict": {k: v.detach().clone() for k, v in sd.items()}}


def test_mmdet_swin_detector(tmp_path):
    source = tiny_swin_atss(seed=0, dcn_bias=False)
    with torch.no_grad():
        for p in source.parameters():  # nothing at its initial value (LayerNorm 1/0, ...)
            p.add_(torch.randn_like(p) * 0.05)
    torch.save(mmdet_swin_atss_checkpoint(source), tmp_path / "mmdet_swin.pth")
    model = tiny_swin_atss(seed=1, dcn_bias=False)
    incompatible = load_file(model, tmp_path / "mmdet_swin.pth")
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = [{"image": torch.rand(3, 70, 90, generator=torch.Generator().manual_seed(0)) * 255}]
    with torch.no_grad():
        a, b = (
            model.backbone(model.preprocess_image(x).tensor),
            source.backbone(source.preprocess_image(x).tensor),
        )
    for k in a:
        assert torch.equal(a[k], b[k])


# ---------------------------------------------------------------------------------------------
# What Detectron2 already reads keeps working: MSRA's Caffe2 .pkl and our own checkpoints.


def test_caffe2_pkl_goes_through_detectron2s_name_matching(tmp_path):
    g = np.random.default_rng(0)
    blobs = {
        "conv1_w": g.standard_normal((64, 3, 7, 7)).astype(np.float32),
        "res_conv1_bn_s": g.standard_normal(64).astype(np.float32),
        "res_conv1_bn_b": g.standard_normal(64).astype(np.float32),
        "res2_0_branch2a_w": g.standard_normal((64, 64, 1, 1)).astype(np.float32),
    }
    with open(tmp_path / "R-50.pkl", "wb") as f:
        pickle.dump(blobs, f)
    overrides = ["model.backbone.dyhead.num_blocks=1"]
    ours = build_config("atss_dyhead_R_50_caffe_FPN_1x.py", overrides)
    RecordingCheckpointer(ours).load(str(tmp_path / "R-50.pkl"))
    stem = ours.backbone.fpn.bottom_up.stem.conv1
    assert torch.equal(stem.weight, torch.from_numpy(blobs["conv1_w"]))
    assert torch.equal(stem.norm.weight, torch.from_numpy(blobs["res_conv1_bn_s"]))
    theirs = build_config("atss_dyhead_R_50_caffe_FPN_1x.py", overrides)
    DetectionCheckpointer(theirs).load(str(tmp_path / "R-50.pkl"))
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[k], v), k


def test_own_checkpoint_resumes_unchanged(tmp_path):
    model = tiny_swin_atss(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.head.cls_logits.weight.grad = torch.ones_like(model.head.cls_logits.weight)
    optimizer.step()
    DyHeadCheckpointer(model, str(tmp_path), optimizer=optimizer).save("model_0000009", iteration=9)

    restored = tiny_swin_atss(seed=1)
    opt2 = torch.optim.SGD(restored.parameters(), lr=0.1, momentum=0.9)
    checkpointer = DyHeadCheckpointer(restored, str(tmp_path), optimizer=opt2)
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    for k, v in model.state_dict().items():
        assert torch.equal(restored.state_dict()[k], v), k
    assert opt2.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_convert_checkpoint_needs_one_resnet():
    with pytest.raises(ValueError, match="exactly one ResNet"):
        convert_checkpoint(torchvision.models.resnet18().state_dict(), tiny_swin_atss())


# ---------------------------------------------------------------------------------------------
# train_net.py loads train.init_checkpoint with DyHeadCheckpointer, in training and --eval-only.


def torchvision_layout(d2_resnet_state: dict) -> dict:
    """A Detectron2 ResNet's weights under torchvision's names (as a torchvision file has them),
    plus a classifier."""
    out = {}
    for k, v in d2_resnet_state.items():
        k = k.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
        for stage in (2, 3, 4, 5):
            k = k.replace(f"res{stage}.", f"layer{stage - 1}.")
        k = k.replace(".shortcut.norm.", ".downsample.1.").replace(".shortcut.", ".downsample.0.")
        for i in (1, 2, 3):
            k = k.replace(f".conv{i}.norm.", f".bn{i}.")
        out[k] = v
    out["fc.weight"], out["fc.bias"] = torch.zeros(1000, 256), torch.zeros(1000)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["train", "eval-only"])
def test_train_net_converts_init_checkpoint(tmp_path, mode):
    from .tiny_quickstart import QUICKSTART, TINY, run_train_net

    cfg = load_config(str(CONFIGS.parents[1] / QUICKSTART), TINY)
    torch.manual_seed(0)
    bottom_up = instantiate(cfg.model.backbone.fpn.bottom_up)
    state = {k: v + 0.01 for k, v in bottom_up.state_dict().items()}
    torch.save(torchvision_layout(state), tmp_path / "imagenet.pth")
    out = tmp_path / "out"
    args = [
        "--config-file",
        QUICKSTART,
        *(["--eval-only"] if mode == "eval-only" else []),
        *TINY,
        f"train.init_checkpoint={tmp_path / 'imagenet.pth'}",
        f"train.output_dir={out}",
        "train.max_iter=1",
        "train.eval_period=0",
    ]
    run = run_train_net(args, tmp_path)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "torchvision: 62 checkpoint entries -> 60 model entries, 2 dropped" in log
    assert "dropped 2 (ImageNet classifier): fc.weight, fc.bias" in log
