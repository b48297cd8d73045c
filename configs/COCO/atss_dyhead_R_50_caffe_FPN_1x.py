# ATSS + DyHead, R-50 (MSRA caffe weights), 1x: the authors' Detectron2 "reproduction" setting,
# 42.4 box AP on COCO val2017 with their released weights.
from ..common.coco_schedule import lr_multiplier_1x as lr_multiplier
from ..common.data.coco import dataloader
from ..common.models.atss_dyhead import model
from ..common.optim import SGD as optimizer
from ..common.train import train

model.backbone.dyhead.port = "authors"  # as the authors' released weights were trained

train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
train.max_iter = 90000
optimizer.lr = 0.01
dataloader.train.total_batch_size = 16
