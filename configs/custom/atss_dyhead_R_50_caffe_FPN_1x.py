# ATSS + DyHead, R-50 (MSRA caffe weights), 1x: the reproduction recipe on your COCO-format data.
#   python train_net.py --config-file configs/custom/atss_dyhead_R_50_caffe_FPN_1x.py \
#       dataset.train_json=/data/train.json dataset.train_images=/data/train \
#       dataset.val_json=/data/val.json dataset.val_images=/data/val \
#       train.init_checkpoint=/path/to/a/released/coco/detector.pth
# train.init_checkpoint defaults to the ImageNet backbone; a COCO detector (the authors',
# MMDetection's or this project's) loads all but its classifier, which starts from scratch.
from ..COCO.atss_dyhead_R_50_caffe_FPN_1x import (
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
train.output_dir = "./output/custom_atss_dyhead_R_50_caffe_FPN_1x"
