# ATSS + DyHead, R-101 (MSRA caffe weights), 2x multi-scale: the paper's ResNet-101 model, 46.5
# box AP (no config or weights were released). The authors' ResNet recipe (their R-50 config:
# MSRA caffe weights, BGR input, std 1, FrozenBN, no stage frozen, SGD, every parameter decayed)
# with the 2x multi-scale schedule of their Swin-T config: shortest edge 640-800 in steps of 32,
# 32 images per batch, 90k iterations, x0.1 at 60k and 80k. SGD's lr is the R-50 config's
# 0.01 at 16 images scaled linearly to 32 images: 0.02 (the paper does not give it).
from detectron2.config import LazyCall as L

from dyhead_d2.modeling import make_resnet_stages

from ..common.coco_schedule import multi_step_schedule
from ..common.data.coco import dataloader
from ..common.models.atss_dyhead import model
from ..common.optim import SGD as optimizer
from ..common.train import train

# Detectron2's build_resnet_backbone options (MODEL.RESNETS.*): set deform_on_per_stage etc. here
# for a deformable variant (see atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms.py).
model.backbone.fpn.bottom_up.stages = L(make_resnet_stages)(
    depth=101,
    num_groups=1,
    width_per_group=64,
    stride_in_1x1=True,  # MSRA's caffe ResNets
    norm="FrozenBN",
    deform_on_per_stage=[False, False, False, False],
)
model.backbone.dyhead.port = "authors"
model.backbone.size_divisibility = 128  # P7's stride, as the authors

dataloader.train.mapper.augmentations[0].short_edge_length = tuple(range(640, 801, 32))
dataloader.train.total_batch_size = 32

optimizer.lr = 0.02
lr_multiplier = multi_step_schedule(90000, (60000, 80000))

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.max_iter = 90000
