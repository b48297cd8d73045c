# A small Mask R-CNN + DyHead trained from scratch on the synthetic shapes (boxes and masks): the
# ATSS quickstart's data, backbone and DyHead in Detectron2's Mask R-CNN (the COCO Mask R-CNN
# config's model file), sized to train and evaluate on a 2-core CPU in minutes, no download.
#   python train_net.py --config-file configs/quickstart/mask_rcnn_dyhead_synthetic.py
from detectron2.layers import ShapeSpec

from ..common.coco_schedule import multi_step_schedule
from ..common.models.rcnn_dyhead import model
from .atss_dyhead_synthetic import FPN_CHANNELS, dataloader, optimizer, train
from .atss_dyhead_synthetic import model as _atss

MAX_ITER = 1000
NUM_CLASSES = 5

# The ATSS quickstart's backbone as it is: half-width ResNet-18 and FPN with GroupNorm, 2 DyHead
# blocks on P3-P7. Mask R-CNN's usual P2 (stride 4) would cost DyHead 4x the positions of P3.
model.backbone = _atss.backbone
model.pixel_mean = _atss.pixel_mean
model.pixel_std = _atss.pixel_std

# RPN on P3-P7, anchors of 16..256 px (objects are 12..96 px in 192 px images), fewer proposals.
rpn = model.proposal_generator
rpn.in_features = ["p3", "p4", "p5", "p6", "p7"]
rpn.head.in_channels = FPN_CHANNELS
rpn.anchor_generator.sizes = [[16], [32], [64], [128], [256]]
rpn.anchor_generator.strides = [8, 16, 32, 64, 128]
rpn.pre_nms_topk = (1000, 1000)
rpn.post_nms_topk = (300, 300)

heads = model.roi_heads
heads.num_classes = NUM_CLASSES
heads.batch_size_per_image = 128  # at most 8 objects per image
# Boxes and masks pooled from P3-P5 (all objects here are below the pooler's canonical 224 px:
# they pool from P3, stride 8).
heads.box_in_features = ["p3", "p4", "p5"]
heads.box_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
heads.mask_in_features = ["p3", "p4", "p5"]
heads.mask_pooler.scales = (1.0 / 8, 1.0 / 16, 1.0 / 32)
heads.box_head.input_shape = ShapeSpec(channels=FPN_CHANNELS, height=7, width=7)
heads.box_head.fc_dims = [256, 256]
heads.box_predictor.input_shape = ShapeSpec(channels=256)
heads.mask_head.input_shape = ShapeSpec(channels=FPN_CHANNELS, width=14, height=14)
heads.mask_head.conv_dims = [FPN_CHANNELS] * 5
heads.mask_head.conv_norm = "GN"

# The synthetic JSON holds RLE masks, which Detectron2 reads as bitmaps.
dataloader.train.mapper.use_instance_mask = True
dataloader.train.mapper.instance_mask_format = "bitmask"

lr_multiplier = multi_step_schedule(MAX_ITER, (int(MAX_ITER * 0.75), int(MAX_ITER * 0.9)), 100)

train.output_dir = "./output/quickstart_mask"
train.max_iter = MAX_ITER
train.eval_period = MAX_ITER
