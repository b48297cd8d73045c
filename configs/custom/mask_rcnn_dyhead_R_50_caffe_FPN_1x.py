# Mask R-CNN + DyHead, R-50 (MSRA caffe weights), 1x, on your COCO-format data with
# segmentations (set dataset.*): polygons or RLE, crowd regions as RLE with iscrowd=1.
#   python train_net.py --config-file configs/custom/mask_rcnn_dyhead_R_50_caffe_FPN_1x.py \
#       dataset.train_json=/data/train.json dataset.train_images=/data/train \
#       dataset.val_json=/data/val.json dataset.val_images=/data/val
# train.init_checkpoint may be a Mask R-CNN or a Faster R-CNN + DyHead detector of other classes
# (e.g. COCO's): everything but the class-dependent predictors loads (a box detector's mask head
# starts from scratch).
from ..COCO.mask_rcnn_dyhead_R_50_caffe_FPN_1x import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)
from ..common.data.custom import dataset, use_custom_dataset
from ..common.data.custom import num_classes as _num_classes

use_custom_dataset(dataloader, train, masks=True)
# Masks as bitmaps: Detectron2's "polygon" format cannot hold RLE; "bitmask" reads both.
dataloader.train.mapper.instance_mask_format = "bitmask"
model.roi_heads.num_classes = _num_classes
train.output_dir = "./output/custom_mask_rcnn_dyhead_R_50_caffe_FPN_1x"
