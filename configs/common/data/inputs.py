# Input normalisation of the pretrained backbones, from Detectron2's common/data/constants.py. The
# common model takes BGR images with the MSRA caffe weights' mean and std 1.
from ..detectron2_zoo import detectron2_config

constants = detectron2_config("common/data/constants.py").constants


def use_imagenet_rgb_input(model, dataloader):
    """torchvision's and Swin's ImageNet weights: RGB images normalised by ImageNet's mean and
    std (the test loader follows the train mapper's image_format)."""
    model.pixel_mean = constants.imagenet_rgb256_mean
    model.pixel_std = constants.imagenet_rgb256_std
    model.input_format = "RGB"
    dataloader.train.mapper.image_format = "RGB"
