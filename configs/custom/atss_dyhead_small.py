# The quickstart's small ATSS + DyHead (half-width ResNet-18, GroupNorm, 2 DyHead blocks) on your
# COCO-format data, sized for a CPU. Model, optimizer and schedule are the quickstart's.
#   python train_net.py --config-file configs/custom/atss_dyhead_small.py \
#       dataset.train_json=/data/train.json dataset.train_images=/data/train \
#       dataset.val_json=/data/val.json dataset.val_images=/data/val \
#       train.init_checkpoint=output/quickstart/model_final.pth
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L

from ..common.data.custom import dataset, use_custom_dataset
from ..common.data.custom import num_classes as _num_classes
from ..quickstart.atss_dyhead_synthetic import (
    dataloader,
    lr_multiplier,
    model,
    optimizer,
    train,
)

use_custom_dataset(dataloader, train)
model.num_classes = _num_classes
# The quickstart's images are all 192x192; yours may not be: shortest edge 320 (the model's
# anchors, 32..512 px, suit such images), longest at most 640.
dataloader.train.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=(320,), max_size=640, sample_style="choice"),
    L(T.RandomFlip)(horizontal=True),
]
dataloader.test.mapper.augmentations = [
    L(T.ResizeShortestEdge)(short_edge_length=320, max_size=640)
]
train.output_dir = "./output/custom_small"
