# Training options read by train_net.py (Detectron2's keys plus amp on CPU, clip_grad and seed).
train = dict(
    output_dir="./output",
    init_checkpoint="",
    max_iter=90000,
    # float16 autocast + GradScaler on CUDA (Detectron2's AMPTrainer), bfloat16 autocast on CPU.
    amp=dict(enabled=False),
    # Global gradient-norm clipping before each optimizer step (off in every published setting).
    clip_grad=dict(enabled=False, max_norm=35.0, norm_type=2.0),
    # The authors wrap the model with find_unused_parameters=True.
    ddp=dict(broadcast_buffers=False, find_unused_parameters=True, fp16_compression=False),
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,
    log_period=20,
    # "auto": CUDA when a GPU is visible, else CPU; "cpu" / "cuda" force one.
    device="auto",
    seed=-1,
)
