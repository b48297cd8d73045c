# ATSS + DyHead, Swin-T, 2x (90k iterations of 32 images), multi-scale training: the authors'
# configs/dyhead_swint_atss_fpn_2x_ms.yaml, 49.8 box AP on COCO val2017.
from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import SwinTransformer

from ..common.coco_schedule import multi_step_schedule
from ..common.data.coco import dataloader
from ..common.data.inputs import use_imagenet_rgb_input
from ..common.models.atss_dyhead import model
from ..common.optim import AdamW as optimizer
from ..common.train import train

model.backbone.fpn.bottom_up = L(SwinTransformer)(
    pretrain_img_size=224,
    embed_dim=96,
    depths=(2, 2, 6, 2),
    num_heads=(3, 6, 12, 24),
    window_size=7,
    mlp_ratio=4.0,
    drop_path_rate=0.2,
    ape=False,
    patch_norm=True,
    out_indices=(1, 2, 3),  # strides 8, 16, 32 (Detectron2 names them p1, p2, p3)
)
model.backbone.fpn.in_features = ["p1", "p2", "p3"]
model.backbone.dyhead.port = "authors"
use_imagenet_rgb_input(model, dataloader)

dataloader.train.mapper.augmentations[0].short_edge_length = tuple(range(640, 801, 32))
dataloader.train.total_batch_size = 32

optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
# The authors' optimizer builder gives every parameter whose name contains "bias" (conv, linear and
# norm biases, Swin's relative_position_bias_table) SOLVER.WEIGHT_DECAY_BIAS, 1e-4 in the
# Detectron2 they trained with; everything else, norm weights included, decays by 0.05.
optimizer.params.overrides = {
    "bias": {"weight_decay": 1e-4},
    "relative_position_bias_table": {"weight_decay": 1e-4},
}
lr_multiplier = multi_step_schedule(90000, (60000, 80000))

# Swin-T ImageNet-1k weights, converted to Detectron2's SwinTransformer on loading.
train.init_checkpoint = (
    "https://github.com/SwinTransformer/storage/releases/download/v1.0.0/"
    "swin_tiny_patch4_window7_224.pth"
)
train.max_iter = 90000
