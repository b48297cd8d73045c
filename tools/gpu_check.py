#!/usr/bin/env python
"""A device check in one run and one table: CUDA tests, deform_impl, speed, memory, agreement.

For the R-50 reproduction detector (configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py) with random,
trained-like weights (see dyhead_d2.benchmark.device_check), it prints: the CUDA tests (those marked
"cuda" in the checkout's tests/ or --tests PATH, passed of collected; they skip without a GPU,
and compare float32 with TF32 off); how far a small DyHead
tower's float32 outputs and gradients on the device are from the CPU's, with TF32 off and on
(cuDNN convolutions and matrix products); the DyHead tower (6 blocks, 256 ch, an 800x1216 image's
P3..P7) and the detector (1 image 800x1333), forward and forward + backward, deform_impl
"torchvision" vs "sampled", with the max |difference| between the two; a training iteration of
Detectron2's trainer (4 images 800x1333, the config's SGD) in float32 and with AMP (AMPTrainer:
float16 + GradScaler on CUDA; bfloat16 autocast on CPU): s/iteration and peak
torch.cuda.max_memory_allocated; inference, batch 1 800x1333, images/s in float32 and AMP (float32
on CUDA with TF32 off and on); the detections of one image on the CPU (torchvision's op) vs the
device (deform_impl "auto"), on CUDA with TF32 off and on. The
timing harness is tools/benchmark.py's (dyhead_d2.benchmark.timing). MMDetection's published
figures (13.2 img/s, 5.4 GB; V100-class GPUs, 4 GPUs x 4 images, their protocol) stand beside
ours for scale only.

    python tools/gpu_check.py                        # on the GPU, full sizes (a few minutes)
    python tools/gpu_check.py --tests PATH           # the tests marked "cuda" under PATH
    python tools/gpu_check.py --device cpu --small   # tiny sizes: ~25 CPU-seconds

docs/gpu.md says how to install the project on a GPU machine and run this check.
"""

import sys
from pathlib import Path

from dyhead_d2 import cli

with cli.tool_imports("tools/gpu_check.py"):
    from dyhead_d2.benchmark.gpu_check import main

# The checkout's tests, whose tests marked "cuda" the check runs (--tests PATH to change it).
TESTS = Path(__file__).resolve().parents[1] / "tests"

if __name__ == "__main__":
    with cli.upstream_warnings_silenced():
        main(sys.argv[1:], description=__doc__.split("\n\n")[0], tests=str(TESTS))
