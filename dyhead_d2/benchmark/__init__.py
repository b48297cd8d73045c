"""Speed, memory and agreement of the project's implementations against the references.

``tools/benchmark.py`` and ``tools/gpu_check.py`` are thin command lines over this package: one
timing harness (:mod:`.timing`), the benchmarks (:mod:`.towers`: (a), (b); :mod:`.plain_block`:
(e); :mod:`.detector`: (c), (d); :mod:`.deployed`: (f)), their driver (:mod:`.runner`) and the
device check (:mod:`.device_check`, :mod:`.gpu_check`, with :mod:`.tf32` to measure float32 with
TF32 off and on). The tower benchmarks and :mod:`.tf32` need only PyTorch and torchvision; the
detector benchmarks and the device check need detectron2.
"""
