# ATSS + DyHead, ResNeXt-101 64x4d, 2x multi-scale: the paper's ResNeXt-64x4d-101 model, 47.7
# box AP (no config or weights were released). The recipe of atss_dyhead_R_101_FPN_2x_ms.py
# (the authors' ResNet recipe with their Swin-T config's 2x multi-scale schedule) on ResNeXt.
#
# ImageNet weights: the paper does not name them, and Detectron2's model zoo has no ResNeXt-101
# 64x4d (ATSS's X-101-64x4d configs start from Detectron's Caffe2 pickle
# ImageNetPretrained/20171220/X-101-64x4d.pkl). This config uses torchvision's
# ResNeXt101_64X4D_Weights.IMAGENET1K_V1 (83.2% top-1 on ImageNet, a newer training recipe than
# the original ResNeXt's), converted to Detectron2's names when loaded: stride in the 3x3
# convolution, RGB input normalised by ImageNet's mean and std, its BatchNorm frozen (FrozenBN).
from detectron2.config import LazyCall as L

from dyhead_d2.modeling import make_resnet_stages

from ..common.data.inputs import use_imagenet_rgb_input
from .atss_dyhead_R_101_FPN_2x_ms import dataloader, lr_multiplier, model, optimizer, train

model.backbone.fpn.bottom_up.stages = L(make_resnet_stages)(
    depth=101,
    num_groups=64,
    width_per_group=4,
    stride_in_1x1=False,
    norm="FrozenBN",
    deform_on_per_stage=[False, False, False, False],
)
use_imagenet_rgb_input(model, dataloader)

train.init_checkpoint = "https://download.pytorch.org/models/resnext101_64x4d-173b62eb.pth"
