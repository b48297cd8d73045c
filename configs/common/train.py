# Training options read by train_net.py and by Detectron2's own tools/lazyconfig_train_net.py:
# Detectron2's keys, plus amp.cpu_bfloat16, clip_grad and seed, which only train_net.py reads.
import torch

train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=90000,
    # enabled: float16 autocast + GradScaler on CUDA (Detectron2's AMPTrainer, which needs CUDA).
    # cpu_bfloat16: bfloat16 autocast on CPU; "auto" uses it only where the CPU computes bfloat16
    # natively (AVX512-BF16 / AMX), elsewhere it is emulated and slower than float32.
    amp=dict(enabled=False, cpu_bfloat16=False),
    # Global gradient-norm clipping before each optimizer step (off in every published setting).
    clip_grad=dict(enabled=False, max_norm=35.0, norm_type=2.0),
    # The authors wrap the model with find_unused_parameters=True.
    ddp=dict(broadcast_buffers=False, find_unused_parameters=True, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    # Resolved when the config loads, so that Detectron2's tools get a real device; override with
    # train.device=cpu / cuda (train_net.py also accepts "auto").
    device="cuda" if torch.cuda.is_available() else "cpu",
    seed=-1,
)
