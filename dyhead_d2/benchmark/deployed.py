"""Benchmark (f): deployed inference on the CPU, the detector of (c) three ways in one run: the
reference (eager, ``deform_impl="torchvision"``), the project in PyTorch eager and the project
exported to ONNX and run by onnxruntime (needs detectron2 and the deploy extra)."""

from __future__ import annotations

import os

import torch

from .detector import DETECTOR_CONFIG
from .timing import compare
from .towers import parse_size, repeats_of

__all__ = ["deployed_inference"]


def deployed_inference(args, device, report) -> None:
    """(f) reference vs project eager vs project in onnxruntime (both ``deform_op`` exports, the
    default DeformConv last), one image, CPU."""
    import tempfile

    import onnxruntime as ort
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from dyhead_d2.deploy.export import export_onnx
    from dyhead_d2.deploy.parity import compare_detections
    from dyhead_d2.model_zoo import get_config

    if device.type != "cpu":
        print(f"\n(f) skipped on {device.type}: onnxruntime runs on the CPU here")
        return
    cfg = get_config(DETECTOR_CONFIG)
    cfg.model.backbone.dyhead.offset_mode = args.offset_mode
    size = parse_size(args.detector_size)
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(0)).float()
    models = {}
    for name, impl in (("reference", "torchvision"), ("project eager", args.impl)):
        cfg.model.backbone.dyhead.deform_impl = impl
        torch.manual_seed(0)  # same weights for all
        models[name] = instantiate(cfg.model).eval()
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        DetectionCheckpointer(models["project eager"], save_dir=tmp).save("weights")
        cfg.model.backbone.dyhead.deform_impl = "sampled"
        cfg.train.init_checkpoint = os.path.join(tmp, "weights.pth")
        for deform_op in ("gather", "DeformConv"):
            out = os.path.join(tmp, f"{deform_op}.onnx")
            path = export_onnx(cfg, out, deform_op=deform_op, verify=False).path
            options = ort.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            # No busy-waiting between ops, like torch under OMP_WAIT_POLICY=PASSIVE.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sessions[f"onnxruntime ({deform_op})"] = ort.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )

    def eager(model):
        with torch.no_grad():
            out = model([{"image": image}])[0]["instances"]
        return out.pred_boxes.tensor.numpy(), out.scores.numpy(), out.pred_classes.numpy()

    runs = {name: (lambda m=m: eager(m)) for name, m in models.items()}
    for name, session in sessions.items():
        runs[name] = lambda s=session: s.run(None, {"image": image.numpy()})
    timings = compare(runs, device, **repeats_of(args))
    expected = runs["project eager"]()
    diffs = {}
    for name in sessions:
        parity = compare_detections(expected, runs[name](), max_detections=100)
        print(f"\n  detections, project eager vs {name}: {parity}")
        diffs[f"detection boxes (eager vs {name})"] = (parity.max_box_diff, float("nan"))
        diffs[f"detection scores (eager vs {name})"] = (parity.max_score_diff, float("nan"))
    title = f"deployed inference (ATSS + DyHead R-50), 1 image {args.detector_size}"
    report("f", title, timings, diffs)
