import torch
from detectron2.config import LazyCall as L
from detectron2.solver.build import get_default_optimizer_params

# The authors' optimizer builder gives every trainable parameter the same weight decay, norm
# layers and biases included; weight_decay_norm=None keeps it so (Detectron2's LazyConfig default
# of 0.0 would exempt the norms).
SGD = L(torch.optim.SGD)(
    params=L(get_default_optimizer_params)(weight_decay_norm=None),
    lr=0.01,
    momentum=0.9,
    weight_decay=1e-4,
)

AdamW = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(weight_decay_norm=None),
    lr=1e-4,
    betas=(0.9, 0.999),
    weight_decay=0.05,
)
