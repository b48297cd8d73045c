# ATSS + DyHead, ResNeXt-101 64x4d with DCNv2 in res3-res5, 2x multi-scale, on your COCO-format
# data (set dataset.*).
from ..COCO.atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.custom import dataset, use_custom_dataset
from ..common.data.custom import num_classes as _num_classes

use_custom_dataset(dataloader, train)
model.num_classes = _num_classes
train.output_dir = "./output/custom_atss_dyhead_X_101_64x4d_DCN_FPN_2x_ms"
