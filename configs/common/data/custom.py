# A user's COCO-format dataset, named by its files: set the four dataset.* keys on the command
# line. Each split is checked (files, JSON, ids, images) and registered with Detectron2 by the
# process that builds its loader or evaluator; the model's class count comes from the train JSON.
from detectron2.config import LazyCall as L

from dyhead_d2.data import coco_dataset, coco_num_classes

dataset = dict(train_json="???", train_images="???", val_json="???", val_images="???")

train_names = L(coco_dataset)(
    json_file="${dataset.train_json}", image_root="${dataset.train_images}", split="train"
)
# The val split must list the train split's categories, so class i means the same in both.
test_names = L(coco_dataset)(
    json_file="${dataset.val_json}",
    image_root="${dataset.val_images}",
    split="val",
    categories_of="${dataset.train_json}",
)
num_classes = L(coco_num_classes)(json_file="${dataset.train_json}")


def use_custom_dataset(dataloader, train, masks: bool = False):
    """Point a recipe's loaders at the dataset.* files; keep images without annotations for
    training (ATSS learns from negatives; dataloader.train.dataset.filter_empty=True drops them)
    and scale the schedule when the total batch differs from the recipe's. ``masks``: a mask
    recipe, whose annotations must have segmentations (checked when the splits register)."""
    dataloader.train.dataset.names = train_names
    dataloader.train.dataset.filter_empty = False
    dataloader.test.dataset.names = test_names
    if masks:
        dataloader.train.dataset.names.need_masks = True
        dataloader.test.dataset.names.need_masks = True
    train.reference_batch_size = dataloader.train.total_batch_size
    train.epochs = 0
