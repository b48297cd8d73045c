from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelP6P7

from dyhead_d2.layers import DyHead
from dyhead_d2.modeling import DyHeadBackbone, LastLevelP6P7NoReLU

# ResNet-50 (MSRA caffe style: stride in the 1x1 conv, FrozenBN, no stage frozen) + FPN on
# res3-res5 with P6/P7 from the P5 output, then 6 DyHead blocks: the authors' backbone. The DyHead
# port (dyhead_d2.layers.ports.PORTS: "authors", "mmdet_repro", "mmdet_simple", "new_training") is
# left '???': every model file must state it. The four options it sets stay None (the port's
# value); set one to change that choice alone, e.g. model.backbone.dyhead.dcn_bias=True.
backbone = L(DyHeadBackbone)(
    fpn=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=True, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            # The authors' add_extra_config sets MODEL.BACKBONE.FREEZE_AT = -1 for every config:
            # no convolution is frozen (BN is FrozenBN anyway). MMDetection's configs freeze more.
            freeze_at=0,
        ),
        in_features=["res3", "res4", "res5"],
        out_channels=256,
        norm="",
        fuse_type="sum",
        top_block=L(LastLevelP6P7)(in_channels=256, out_channels=256, in_feature="p5"),
    ),
    dyhead=L(DyHead)(
        in_channels=256,
        out_channels=256,
        num_blocks=6,
        port="???",
        offset_mode=None,
        dcn_bias=None,
        zero_init_offset=None,
        init_style=None,
    ),
    # Images are padded to a multiple of this. None: the largest stride of the pyramid (128 for
    # P3-P7, 64 for P2-P6), as the authors and MMDetection's reproduction setting pad, so that
    # every level is exactly half the previous one. MMDetection's simple setting pads to 32
    # (less padding, the coarse levels rounded up). Each model config states its value.
    size_divisibility=None,
    # "auto": channels-last for CPU inference (faster convolutions), contiguous in training and
    # on GPUs; "contiguous" or "channels_last" force one layout. The same outputs up to rounding.
    memory_format="auto",
)


def mmdet_top_block():
    """MMDetection's P6/P7: on the P5 output, no ReLU before P7 (the authors' backbone above
    has Detectron2's LastLevelP6P7, with the ReLU)."""
    return L(LastLevelP6P7NoReLU)(in_channels=256, out_channels=256, in_feature="p5")
