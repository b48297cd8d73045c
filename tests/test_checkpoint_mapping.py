"""Checkpoint conversion without detectron2: the strict engine, layout detection, and the DyHead
tower and ATSS head in the authors' and MMDetection's names."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dyhead_d2.atss import ATSSHead
from dyhead_d2.checkpoint import (
    CheckpointConversionError,
    convert_checkpoint,
    detect_format,
    unwrap_state_dict,
)
from dyhead_d2.checkpoint.mapping import (
    KeyMap,
    apply_key_map,
    conv1x1_to_linear,
    drop,
    scalar_to_vector,
)
from dyhead_d2.checkpoint.mmdet import unfold_to_swin_order
from dyhead_d2.layers import DyHead

from .checkpoint_layouts import (
    Randn,
    authors_tower_and_head,
    mmdet_tower_and_head,
    set_by_hand_authors,
    set_by_hand_mmdet,
)

C = 32  # GroupNorm(16) after each DCN needs a multiple of 16; small keeps the test fast
K = 3  # classes
BLOCKS = 2


def shapes(**named):
    return {k: torch.zeros(v) for k, v in named.items()}


# ---------------------------------------------------------------------------------------------
# The engine: every problem, all at once.


def test_every_problem_is_listed():
    model = shapes(**{"a.weight": (4, 3), "b.weight": (2,), "c.weight": (5,), "d.weight": (1,)})
    ckpt = {
        "A.weight": torch.zeros(4, 3),
        "B.weight": torch.zeros(3),  # wrong shape
        "X.weight": torch.zeros(1),  # -> a key the model does not have
        "junk1": torch.zeros(1),  # no rule
        "junk2": torch.zeros(1),  # no rule
        "C.weight": torch.zeros(5),
        "C2.weight": torch.zeros(5),  # second source for c.weight
    }
    rules = {
        "A.weight": "a.weight",
        "B.weight": "b.weight",
        "X.weight": "x.weight",
        "C.weight": "c.weight",
        "C2.weight": "c.weight",
    }
    with pytest.raises(CheckpointConversionError) as err:
        apply_key_map(ckpt, model, lambda k: KeyMap(rules[k]) if k in rules else None, source="t")
    msg = str(err.value)
    assert "(6 problems)" in msg
    for expected in [
        "no rule for checkpoint key junk1",
        "no rule for checkpoint key junk2",
        "model has no key for X.weight -> x.weight",
        "two checkpoint keys for one model key: C.weight and C2.weight -> c.weight",
        "shape mismatch: B.weight -> b.weight: checkpoint (3,), model (2,)",
        "model key not filled by the checkpoint: d.weight",
    ]:
        assert expected in msg
    assert err.value.problems and len(err.value.problems) == 6


def test_drops_fills_and_transforms_are_reported():
    model = shapes(
        **{
            "n.running_mean": (2,),
            "n.num_batches_tracked": (),
            "f.running_mean": (2,),  # a FrozenBN: no counter
            "lin.weight": (3, 4),
            "s.scale": (1,),
            "other.weight": (2,),
        }
    )
    ckpt = {
        "N.running_mean": torch.ones(2),  # its counter is absent from the checkpoint
        "F.running_mean": torch.ones(2),
        "F.num_batches_tracked": torch.tensor(7),
        "L.weight": torch.arange(12.0).reshape(3, 4, 1, 1),
        "S": torch.tensor(2.5),
        "fc.weight": torch.zeros(1000, 2),
    }

    rules = {
        "N.running_mean": KeyMap("n.running_mean"),
        "F.running_mean": KeyMap("f.running_mean"),
        "F.num_batches_tracked": KeyMap("f.num_batches_tracked"),
        "L.weight": KeyMap("lin.weight", transform=conv1x1_to_linear),
        "S": KeyMap("s.scale", transform=scalar_to_vector),
        "fc.weight": drop("classifier"),
    }
    conv = apply_key_map(
        ckpt, model, rules.get, source="t", required=lambda k: not k.startswith("other")
    )
    sd = conv.state_dict
    assert torch.equal(sd["lin.weight"], torch.arange(12.0).reshape(3, 4))
    assert sd["s.scale"].shape == (1,) and sd["s.scale"].item() == 2.5
    assert sd["n.num_batches_tracked"].item() == 0 and "n.num_batches_tracked" in conv.filled
    assert "f.num_batches_tracked" not in sd and "F.num_batches_tracked" in conv.dropped
    assert conv.dropped["fc.weight"] == "classifier"
    assert conv.left_unfilled == ["other.weight"]
    summary = conv.summary()
    assert "6 checkpoint entries" in summary and "dropped 1 (classifier): fc.weight" in summary


def test_transforms_do_not_hide_wrong_shapes():
    model = shapes(**{"lin.weight": (3, 4)})
    with pytest.raises(CheckpointConversionError, match=r"checkpoint \(3, 4, 3, 3\)"):
        apply_key_map(
            {"w": torch.zeros(3, 4, 3, 3)},
            model,
            lambda k: KeyMap("lin.weight", transform=conv1x1_to_linear),
            source="t",
        )


# ---------------------------------------------------------------------------------------------
# Layout detection and unwrapping.

LAYOUTS = {
    "authors": {"backbone.dyhead_tower.0.offset.weight": 0, "head.cls_logits.weight": 0},
    "mmdet": {"backbone.conv1.weight": 0, "neck.0.lateral_convs.0.conv.weight": 0},
    "torchvision": {"conv1.weight": 0, "layer1.0.conv1.weight": 0, "fc.weight": 0},
    "swin": {"patch_embed.proj.weight": 0, "layers.0.blocks.0.norm1.weight": 0, "head.weight": 0},
    None: {"backbone.fpn.bottom_up.stem.conv1.weight": 0, "backbone.dyhead.blocks.0.x": 0},
}


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=str)
def test_detect_format(layout):
    sd = {k: torch.zeros(1) for k in LAYOUTS[layout]}
    assert detect_format(sd) == layout


def test_detect_format_refuses_a_mix():
    sd = {k: torch.zeros(1) for k in [*LAYOUTS["authors"], *LAYOUTS["mmdet"]]}
    with pytest.raises(ValueError, match="several layouts.*authors, mmdet"):
        detect_format(sd)


def test_unwrap_state_dict():
    flat = {"module.a": torch.ones(1), "module.b": np.zeros(2, dtype=np.float32)}
    for wrapped in (
        flat,
        {"model": flat},
        {"state_dict": flat, "meta": {}},
        {"model": {"state_dict": flat}},
    ):
        sd = unwrap_state_dict(wrapped)
        assert list(sd) == ["a", "b"] and isinstance(sd["b"], torch.Tensor)
    with pytest.raises(TypeError, match="'x' is a str"):
        unwrap_state_dict({"model": {"x": "not a tensor"}})


def test_auto_needs_a_known_layout():
    with pytest.raises(ValueError, match="cannot tell the checkpoint's layout"):
        convert_checkpoint({"foo.weight": torch.zeros(1)}, {"foo.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unknown checkpoint source 'caffe'"):
        convert_checkpoint({"foo.weight": torch.zeros(1)}, {}, source="caffe")


# ---------------------------------------------------------------------------------------------
# MMDetection's Swin PatchMerging (nn.Unfold channel order) -> the official order.


def test_unfold_order_matches_official_patch_merging():
    g = torch.Generator().manual_seed(0)
    b, h, w, c, out = 2, 6, 4, 3, 5
    x = torch.randn(b, h, w, c, generator=g)
    # MMDetection's merging: nn.Unfold(2, stride 2) on (B, C, H, W), its own weight order.
    w_mm, g_mm, b_mm = (torch.randn(s, generator=g) for s in ((out, 4 * c), (4 * c,), (4 * c,)))
    cols = nn.Unfold(kernel_size=2, stride=2)(x.permute(0, 3, 1, 2)).transpose(1, 2)
    y_mm = F.linear(F.layer_norm(cols, (4 * c,), g_mm, b_mm), w_mm)
    # The official merging: concatenate the taps (0,0), (1,0), (0,1), (1,1).
    taps = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    merged = torch.cat(taps, dim=-1).reshape(b, -1, 4 * c)
    w_off, g_off, b_off = (unfold_to_swin_order(t) for t in (w_mm, g_mm, b_mm))
    y_off = F.linear(F.layer_norm(merged, (4 * c,), g_off, b_off), w_off)
    torch.testing.assert_close(y_off, y_mm, rtol=1e-5, atol=1e-5)
    # Not the identity: without the reorder the outputs differ.
    y_wrong = F.linear(F.layer_norm(merged, (4 * c,), g_mm, b_mm), w_mm)
    assert (y_wrong - y_mm).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# DyHead tower + ATSS head: foreign names written out, converted, compared with a hand-set model.


class TowerAndHead(nn.Module):
    """The parts of our detector that need no detectron2, under the detector's names."""

    def __init__(self, dcn_bias: bool, pred_kernel: int):
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.dyhead = DyHead(
            C,
            C,
            BLOCKS,
            offset_mode="official" if dcn_bias else "topleft",
            dcn_bias=dcn_bias,
            zero_init_offset=False,
            init_style="authors" if dcn_bias else "mmdet",
        )
        self.head = ATSSHead(
            in_channels=C, num_classes=K, num_levels=3, pred_kernel_size=pred_kernel
        )

    def forward(self, levels):
        return self.head(self.backbone.dyhead(levels))


def levels(seed=5):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, C, h, w, generator=g) for h, w in ((12, 14), (6, 7), (3, 4))]


def authors_layout():
    return authors_tower_and_head(Randn(0), C, BLOCKS, K, 3)


def mmdet_layout():
    return mmdet_tower_and_head(Randn(0), C, BLOCKS, K, 3, pred_kernel=3)


def mmdet_layout_with_dcn_bias():
    return mmdet_tower_and_head(Randn(0), C, BLOCKS, K, 3, pred_kernel=3, dcn_bias=True)


@pytest.mark.parametrize(
    "source, make, set_by_hand, dcn_bias, pred_kernel",
    [
        ("authors", authors_layout, set_by_hand_authors, True, 1),
        ("mmdet", mmdet_layout, set_by_hand_mmdet, False, 3),
        ("mmdet", mmdet_layout_with_dcn_bias, set_by_hand_mmdet, True, 3),
    ],
)
def test_tower_and_head_convert_like_setting_them_by_hand(
    source, make, set_by_hand, dcn_bias, pred_kernel
):
    sd = make()
    torch.manual_seed(0)
    converted = TowerAndHead(dcn_bias, pred_kernel).eval()
    fresh = [t.clone() for t in converted(levels())[0]]
    conversion = convert_checkpoint({"model": sd}, converted, source="auto")
    assert conversion.source == source and not conversion.dropped and not conversion.filled
    converted.load_state_dict(conversion.state_dict, strict=True)

    torch.manual_seed(1)
    by_hand = TowerAndHead(dcn_bias, pred_kernel).eval()
    set_by_hand(by_hand, sd)
    with torch.no_grad():
        got, want = converted(levels()), by_hand(levels())
    for a, b in zip(got, want):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    # The checkpoint's values are what the model runs on (not its initialisation).
    assert not torch.allclose(got[0][0], fresh[0])


def test_mmdet_dcn_bias_layouts_must_match_the_model():
    # Both layouts convert onto the matching model (above); onto the other one they are refused
    # in one line naming the override, never by dropping the biases or leaving them at init.
    with_bias = mmdet_layout_with_dcn_bias()
    assert sum(".conv.bias" in k and "spatial_conv" in k for k in with_bias) == 3 * BLOCKS
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(with_bias, TowerAndHead(False, 3), source="mmdet")
    assert err.value.problems == [
        "the file's DyHead deformable convolutions have biases "
        "(neck.1.dyhead_blocks.*.spatial_conv_*.conv.bias) and the model's have none: "
        "build the model with model.backbone.dyhead.dcn_bias=True"
    ]
    with pytest.raises(CheckpointConversionError, match=r"dcn_bias=False"):
        convert_checkpoint(mmdet_layout(), TowerAndHead(True, 3), source="mmdet")
    conversion = convert_checkpoint(with_bias, TowerAndHead(True, 3), source="mmdet")
    for k in ("high", "mid", "low"):
        key = f"backbone.dyhead.blocks.1.conv_{k}.conv.bias"
        assert torch.equal(
            conversion.state_dict[key],
            with_bias[f"neck.1.dyhead_blocks.1.spatial_conv_{k}.conv.bias"],
        )


def test_tower_and_head_with_a_missing_and_an_unknown_key():
    sd = authors_layout()
    del sd["backbone.dyhead_tower.1.relu.fc.2.bias"]
    sd["backbone.dyhead_tower.0.relu.fc.9.weight"] = torch.zeros(1)
    sd["head.cls_logits.weight"] = torch.zeros(K + 1, C, 1, 1)
    with pytest.raises(CheckpointConversionError) as err:
        convert_checkpoint(sd, TowerAndHead(True, 1), source="authors")
    msg = str(err.value)
    assert "(3 problems)" in msg
    assert "no rule for checkpoint key backbone.dyhead_tower.0.relu.fc.9.weight" in msg
    assert "head.cls_logits.weight -> head.cls_logits.weight: checkpoint (4, 32, 1, 1)" in msg
    assert "not filled by the checkpoint: backbone.dyhead.blocks.1.task_attn.fc2.bias" in msg


_WITHOUT_DETECTRON2 = textwrap.dedent(
    """
    import sys
    sys.modules["detectron2"] = None  # makes `import detectron2` raise ImportError
    import torch
    from dyhead_d2.checkpoint import convert_checkpoint
    sd = {"conv1.weight": torch.ones(2), "layer1.0.conv1.weight": torch.ones(3)}
    model = {"m.stem.conv1.weight": torch.zeros(2), "m.res2.0.conv1.weight": torch.zeros(3)}
    print(sorted(convert_checkpoint(sd, model).state_dict))
    try:
        from dyhead_d2.checkpoint import DyHeadCheckpointer
    except ImportError as e:
        assert "needs detectron2" in str(e) and "pip install" in str(e), e
        print("ok")
    """
)


def test_conversion_needs_no_detectron2():
    out = subprocess.run(
        [sys.executable, "-c", _WITHOUT_DETECTRON2], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['m.res2.0.conv1.weight',", "'m.stem.conv1.weight']", "ok"]
