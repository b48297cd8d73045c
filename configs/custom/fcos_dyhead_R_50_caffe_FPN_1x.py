# FCOS + DyHead, R-50 (MSRA caffe weights), 1x, on your COCO-format data (set dataset.*).
from ..COCO.fcos_dyhead_R_50_caffe_FPN_1x import (
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
train.output_dir = "./output/custom_fcos_dyhead_R_50_caffe_FPN_1x"
