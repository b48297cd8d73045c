"""Which tensors of a detector depend on its number of classes, for fine-tuning to new classes,
and which branches a box detector's checkpoint lacks, for fine-tuning it into a mask model.

A COCO detector fine-tuned on a dataset of N classes keeps every tensor except the
class-dependent ones, which are left as the model initialised them (as in training from scratch,
the focal-loss prior bias included). A box detector (Faster R-CNN) fine-tuned into Mask R-CNN
also leaves the whole mask head as initialised. Recognised by module class name, so this needs
only PyTorch.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from torch import nn

__all__ = ["absent_branches", "class_dependent_keys", "split_class_mismatches"]

# Module class -> (child predictor, what it is). Detectron2's FastRCNNOutputLayers also has
# class-specific box deltas (4 per class) unless it regresses class-agnostic boxes, in which case
# their shape does not change and they load as usual.
_PREDICTORS: dict[str, tuple[tuple[str, str], ...]] = {
    "ATSSHead": (("cls_logits", "ATSS classifier"),),
    "RetinaNetHead": (("cls_score", "RetinaNet classifier"),),
    "FCOSHead": (("cls_score", "FCOS classifier"),),
    "FastRCNNOutputLayers": (
        ("cls_score", "Fast R-CNN classifier"),
        ("bbox_pred", "Fast R-CNN class-specific box deltas"),
    ),
    # One mask per class, unless the head predicts class-agnostic masks (one channel, loads).
    "MaskRCNNConvUpsampleHead": (("predictor", "Mask R-CNN class-specific mask predictor"),),
}

# Module class -> what it is: branches a box detector's checkpoint does not have.
_BRANCHES: dict[str, str] = {"MaskRCNNConvUpsampleHead": "Mask R-CNN mask head"}


def class_dependent_keys(model: nn.Module) -> dict[str, str]:
    """``{state-dict key: what it is}`` for every class-dependent tensor of ``model``."""
    out = {}
    for prefix, module in model.named_modules():
        for child, what in _PREDICTORS.get(type(module).__name__, ()):
            predictor = getattr(module, child, None)
            if not isinstance(predictor, nn.Module):
                continue
            base = f"{prefix}.{child}" if prefix else child
            for name, _ in predictor.named_parameters(recurse=False):
                out[f"{base}.{name}"] = what
    return out


def split_class_mismatches(
    shapes: Mapping[str, tuple[Sequence[int], Sequence[int]]], class_keys: Mapping[str, str]
) -> tuple[dict[str, str], list[str]]:
    """Sort shape mismatches ``{key: (checkpoint shape, model shape)}`` into those a change of
    the number of classes explains (class-dependent key, only the first dimension differs) and
    the rest.

    Returns ``({key: why it is skipped}, [problems])``.
    """
    skipped, problems = {}, []
    for key, (got, want) in shapes.items():
        got, want = tuple(got), tuple(want)
        if key in class_keys and len(got) == len(want) and got[1:] == want[1:]:
            skipped[key] = (
                f"{class_keys[key]}, its size depends on the number of classes: checkpoint "
                f"{got}, model {want}"
            )
        else:
            problems.append(f"shape mismatch: {key}: checkpoint {got}, model {want}")
    return skipped, problems


def absent_branches(model: nn.Module, checkpoint_keys: Collection[str]) -> dict[str, str]:
    """``{prefix: what it is}`` of the branches of ``model`` (e.g. Mask R-CNN's mask head,
    ``"roi_heads.mask_head."``) of which the checkpoint has no key at all: a box detector's
    checkpoint, from which such a branch starts from scratch."""
    out = {}
    for prefix, module in model.named_modules():
        what = _BRANCHES.get(type(module).__name__)
        if what is None or not prefix:
            continue
        start = f"{prefix}."
        if not any(key.startswith(start) for key in checkpoint_keys):
            out[start] = what
    return out
