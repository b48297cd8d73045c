"""DyHead's port presets: each port's four choices, stated once, checked once, no silent default."""

import dataclasses

import pytest
import torch

from dyhead_d2 import DyHead, DyHeadBlock
from dyhead_d2.layers import PORTS, DyHeadPort, resolve_port

C = 16


def test_presets_state_each_ports_choices():
    # The reference's per-port facts: the authors' DCNs have a bias and PyTorch-default inits;
    # MMDetection's have none, N(0, 0.01) inits, and its simple setting zeroes the offset conv;
    # every released model reads the high-branch offset the authors' kernel way ("official").
    assert {k: dataclasses.astuple(v) for k, v in PORTS.items()} == {
        "authors": ("official", True, False, "authors"),
        "mmdet_repro": ("official", False, False, "mmdet"),
        "mmdet_simple": ("official", False, True, "mmdet"),
        "new_training": ("aligned", True, True, "mmdet"),
    }
    with pytest.raises(TypeError):
        PORTS["mine"] = PORTS["authors"]  # read-only: no global state to change
    with pytest.raises(dataclasses.FrozenInstanceError):
        PORTS["authors"].dcn_bias = False


def test_options_replace_the_presets_values():
    assert resolve_port("authors") is PORTS["authors"]
    port = resolve_port("mmdet_repro", dcn_bias=True)
    assert dataclasses.astuple(port) == ("official", True, False, "mmdet")
    assert resolve_port(None, **dataclasses.asdict(PORTS["authors"])) == PORTS["authors"]
    mine = DyHeadPort("topleft", False, True, "authors")
    assert resolve_port(mine, init_style="mmdet") == DyHeadPort("topleft", False, True, "mmdet")


def test_bad_ports_say_what_is_wrong():
    with pytest.raises(TypeError, match="DyHead needs a port .*missing: dcn_bias, init_style"):
        resolve_port(None, offset_mode="official", zero_init_offset=False)
    with pytest.raises(ValueError, match="unknown port 'mmdet'; expected one of 'authors'"):
        resolve_port("mmdet")
    with pytest.raises(ValueError, match="Unknown offset_mode 'mmdet'"):
        resolve_port("authors", offset_mode="mmdet")
    with pytest.raises(ValueError, match="Unknown init_style 'detectron2'"):
        DyHeadPort("official", True, False, "detectron2")
    # "False" from a hand-written config would be truthy: an error, not a silent DCN bias.
    with pytest.raises(TypeError, match="dcn_bias must be True or False, got 'False'"):
        resolve_port("mmdet_repro", dcn_bias="False")
    with pytest.raises(TypeError, match="port must be a preset name or a DyHeadPort, got dict"):
        resolve_port({"offset_mode": "official"})


def test_tower_built_from_a_preset_equals_the_tower_built_from_its_four_options():
    explicit = dict(
        offset_mode="official", dcn_bias=False, zero_init_offset=True, init_style="mmdet"
    )
    torch.manual_seed(0)
    by_options = DyHead(C, C, 2, **explicit)
    torch.manual_seed(0)
    by_name = DyHead(C, C, 2, port="mmdet_simple")
    assert by_name.port == by_options.port == PORTS["mmdet_simple"]
    a, b = by_options.state_dict(), by_name.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    # Resolved once, in DyHead; every block holds that same port.
    assert all(block.port is by_name.port for block in by_name.blocks)
    assert [block.offset_mode for block in by_name.blocks] == ["official"] * 2


def test_block_takes_a_port_and_overrides():
    block = DyHeadBlock(C, C, port="authors", zero_init_offset=True)
    assert block.offset_mode == "official" and block.conv_low.conv.bias is not None
    assert bool((block.offset_conv.weight == 0).all()) and bool((block.offset_conv.bias == 0).all())
    with pytest.raises(TypeError, match="DyHeadBlock needs a port"):
        DyHeadBlock(C, C, offset_mode="aligned")
