#!/usr/bin/env python
"""Speed and memory of the DyHead neck: the project's implementation vs the reference.

The reference is the authors' algorithm as written: one level and one branch at a time with
``torchvision.ops.deform_conv2d`` (``DyHead(..., deform_impl="torchvision")``, i.e.
:meth:`DyHeadBlock.forward_per_level`). The project's implementation is the same module with
``deform_impl=--impl`` (default ``"auto"``: the sampled, gather + GEMM path on CPU) and the same
weights. Both run in the same process, interleaved (ref, new, new, ref, ...), and each reported
time is the median over ``--repeats`` runs after ``--warmup`` runs, so load from other processes
hits both alike; compare the ratios, not the absolute times. Each time is also given as process
CPU time (all threads): where other jobs share the cores, wall time penalises multi-threaded code
more than single-threaded code, and the CPU-time ratio says how much work each side does.

On a machine shared with other jobs, set ``OMP_WAIT_POLICY=PASSIVE``: with the default
(spinning) policy every parallel op waits for a worker thread that another process holds the core
of, which costs the project's implementation (many parallel ops) far more than the reference
(whose torchvision kernels are single-threaded loops). The header line shows the policy in use.

Benchmarks (``--which``):

* ``a``: the DyHead tower forward (inference, under ``torch.no_grad``).
* ``b``: the tower forward + backward (gradients of the inputs and of every parameter).
* ``e``: the first block vs plain 3x3 convolutions of the same shapes, forward and forward +
  backward (gradients of inputs and weights on both sides):

  - ``e/block``: the whole block vs the same block in which each deformable conv is a plain
    ``F.conv2d`` (same weights, strides and padding), its output multiplied by the mean
    modulation mask so that the offset conv stays in the graph. Offset conv, GroupNorm,
    upsampling, attentions and DyReLU are on both sides.
  - ``e/guard``: the guard against non-finite offsets alone (the block's one check of all
    levels' offset_conv outputs, plus, on the per-level ``"torchvision"`` path, each deformable
    conv's sanitising of its offsets and masks) vs the whole block forward.
  - ``e/convs``: only the three deformable convs of every level (offsets/masks given, and
    differentiated in the backward run) vs the three plain convs of every level; no offset
    conv, normalisation or attention on either side.
* ``c``: full detector inference (``configs/COCO/atss_dyhead_R_50_caffe_FPN_1x.py``, random
  weights, same for both sides) on one 800x1216 image; the reported difference is that of the
  DyHead outputs. The reference is the authors' model as written (contiguous memory, frozen
  BatchNorm as separate layers); the project's runs as ``Predictor`` runs it: frozen BatchNorm
  folded into the convolutions and ``DyHeadBackbone(memory_format="auto")`` (channels-last on
  the CPU).
* ``d``: one training step (forward, backward, SGD step) of that detector on two 512x512 images
  with six random boxes each; the reference also runs the authors' per-box ATSS assignment loop
  instead of the vectorised one. Differences of the losses and of all gradients are reported.
  (Both train in contiguous memory: ``memory_format="auto"`` is that in training.)
* ``f``: deployed inference on the CPU: the detector of (c) on one ``--detector-size`` image,
  three ways in one run: the reference (eager, ``deform_impl="torchvision"``, as in (c)), the
  project in PyTorch eager (``--impl``, prepared as in (c)) and the project exported to ONNX
  (``dyhead_d2.deploy``) run by onnxruntime's CPU provider with as many threads as torch, whose
  threads spin between ops unless ``OMP_WAIT_POLICY=PASSIVE`` (as torch's OpenMP threads do).
  The ratios are the reference's time over each; the differences are those of the detections of
  eager and onnxruntime. Needs the deploy extra (onnx, onnxruntime); the export takes a minute
  and is not timed.
* ``g``: what padding costs (``model.backbone.size_divisibility``): the project's detector of
  (c), prepared as in (c), with images padded to a multiple of 32 and of 128 (the reproduction
  setting's), same weights: inference on one ``--detector-size`` image (``g/inference``) and a
  training step on that image with six random boxes (``g/train``). The ratio is the time with
  128 over the time with 32; the header gives both padded sizes.
  (``c``, ``d``, ``f`` and ``g`` need detectron2; their sizes are ``--detector-size`` and
  ``--train-size``, and they ignore ``--sizes``, ``--blocks`` and ``--channels``.)

Peak memory (largest over the timed runs): on CUDA, ``torch.cuda.max_memory_allocated`` minus
the memory allocated before the run. On CPU, the peak resident set size of the process during the
run (Linux ``VmHWM``, reset before each run through ``/proc/self/clear_refs``) minus the resident
size just before it: the memory the run added. Memory the allocator kept from earlier runs is
reused without showing up, so this is coarser than the CUDA number (it can read 0). Where the
peak cannot be reset, the column shows ``n/a``. For (b), "saved for backward" is exact: the bytes
of the distinct storages autograd keeps from one forward for the backward (parameters included),
counted with ``torch.autograd.graph.saved_tensors_hooks``.

Example::

    python tools/benchmark.py --sizes 800x1216 --blocks 6 --which a,b,e --repeats 3
"""

import sys

from dyhead_d2.benchmark.runner import main

if __name__ == "__main__":
    main(sys.argv[1:], description=__doc__.split("\n\n")[0])
