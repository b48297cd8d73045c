"""Benchmark (f): deployed inference on the CPU, the detector of (c) three ways in one run: the
reference (eager, ``deform_impl="torchvision"``), the project in PyTorch eager and the project
exported to ONNX and run by onnxruntime (needs detectron2 and the deploy extra)."""

from __future__ import annotations

import os

import torch

from ..cli import repo_path
from .detector import DETECTOR_CONFIG
from .timing import compare
from .towers import parse_size, repeats_of

__all__ = ["deployed_inference"]


def deployed_inference(args, device, report) -> None:
    """(f) reference vs project eager vs project in onnxruntime, one image, CPU."""
    import tempfile

    import onnxruntime as ort
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from dyhead_d2.deploy.export import export_onnx
    from dyhead_d2.deploy.parity import compare_detections
    from dyhead_d2.engine import load_config

    if device.type != "cpu":
        print(f"\n(f) skipped on {device.type}: onnxruntime runs on the CPU here")
        return
    cfg = load_config(repo_path(DETECTOR_CONFIG))
    cfg.model.backbone.dyhead.offset_mode = args.offset_mode
    size = parse_size(args.detector_size)
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0)).float()
    models = {}
    for name, impl in (("reference", "torchvision"), ("project eager", args.impl)):
        cfg.model.backbone.dyhead.deform_impl = impl
        torch.manual_seed(0)  # same weights for all
        models[name] = instantiate(cfg.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(models["project eager"], save_dir=tmp).save("weights")
        cfg.model.backbone.dyhead.deform_impl = "sampled"
        cfg.train.init_checkpoint = os.path.join(tmp, "weights.pth")
        path = export_onnx(cfg, os.path.join(tmp, "model.onnx"), verify=False).path
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def eager(model):
        with torch.no_grad():
            out = model([{"image": image}])[0]["instances"]
        return out.pred_boxes.tensor.numpy(), out.scores.numpy(), out.pred_classes.numpy()

    runs = {name: (lambda m=m: eager(m)) for name, m in models.items()}
    runs["onnxruntime"] = lambda: session.run(None, {"image": image.numpy()})
    timings = compare(runs, device, **repeats_of(args))
    parity = compare_detections(runs["project eager"](), runs["onnxruntime"](), max_detections=100)
    print(f"\n  detections, project eager vs onnxruntime: {parity}")
    diffs = {
        "detection boxes (eager vs onnxruntime)": (parity.max_box_diff, float("nan")),
        "detection scores (eager vs onnxruntime)": (parity.max_score_diff, float("nan")),
    }
    title = f"deployed inference (ATSS + DyHead R-50), 1 image {args.detector_size}"
    report("f", title, timings, diffs)
