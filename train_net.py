#!/usr/bin/env python
"""Train or evaluate a DyHead model from a LazyConfig file.

In the shape of Detectron2's ``tools/lazyconfig_train_net.py``:

    python train_net.py --config-file configs/quickstart/atss_dyhead_synthetic.py
    python train_net.py --config-file CFG --num-gpus 8 train.output_dir=out
    python train_net.py --config-file CFG --eval-only train.init_checkpoint=out/model_final.pth
    python train_net.py --config-file CFG --resume      # continue from out/last_checkpoint

The configs resolve ``train.device`` to "cuda" when a GPU is visible and "cpu" otherwise (and
this script also accepts "auto"); with ``--num-gpus N`` on CPU, Detectron2's ``launch`` starts N
processes that talk over GLOO. Besides Detectron2's keys, ``train`` understands
``amp.cpu_bfloat16`` (bfloat16 autocast on a CPU that computes bfloat16 natively, see
:func:`dyhead_d2.engine.choose_precision`), ``clip_grad`` (``enabled``, ``max_norm``,
``norm_type``) and ``seed``.
"""

from __future__ import annotations

import logging
import os
import sys

from dyhead_d2._detectron2 import require_detectron2

require_detectron2("train_net.py")

import torch  # noqa: E402
from detectron2.config import instantiate  # noqa: E402
from detectron2.engine import (  # noqa: E402
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model  # noqa: E402
from detectron2.evaluation import inference_on_dataset, print_csv_format  # noqa: E402
from detectron2.utils import comm  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from dyhead_d2.checkpoint import DyHeadCheckpointer  # noqa: E402
from dyhead_d2.config import (  # noqa: E402
    ConfigError,
    check_checkpoint,
    dataset_names,
    load_config,
    resolve_device,
)
from dyhead_d2.engine import (  # noqa: E402
    TrainingDiverged,
    add_gradient_clipping,
    apply_schedule_options,
    build_trainer,
    check_datasets,
    choose_precision,
    train_or_explain,
)
from dyhead_d2.layers import NonFiniteError  # noqa: E402

logger = logging.getLogger("detectron2")


def do_test(cfg, model):
    """COCO evaluation of ``model`` on ``dataloader.test``; returns the results dict."""
    if "evaluator" not in cfg.dataloader:
        return {}
    ret = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    print_csv_format(ret)
    return ret


def build_ddp(cfg, model):
    ddp_args = dict(cfg.train.get("ddp", {}))
    if cfg.train.device == "cpu":
        ddp_args["device_ids"] = None  # GLOO on CPU: no device to pin the replica to
    return create_ddp_model(model, **ddp_args)


def do_train(args, cfg):
    model = instantiate(cfg.model)
    logger.info(f"Model:\n{model}")
    model.to(cfg.train.device)

    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", {})
    if clip.get("enabled", False):
        add_gradient_clipping(optimizer, clip.max_norm, clip.get("norm_type", 2.0))

    train_loader = instantiate(cfg.dataloader.train)
    amp = cfg.train.get("amp", {})
    precision = choose_precision(
        cfg.train.device, amp.get("enabled", False), amp.get("cpu_bfloat16", False)
    )
    (logger.warning if precision.warn else logger.info)(f"Precision: {precision.reason}")
    trainer = build_trainer(
        model, train_loader, optimizer, precision.mode, wrap=lambda m: build_ddp(cfg, m)
    )

    # Checkpoints hold the bare model (no DDP / autocast wrapper), the optimizer, the iteration and
    # the LR scheduler, so --resume continues exactly where a killed run stopped. DyHeadCheckpointer
    # also converts released and ImageNet checkpoints (train.init_checkpoint) on loading.
    # allow_new_classes: a detector of other classes (e.g. COCO's) fine-tunes to this dataset's.
    checkpointer = DyHeadCheckpointer(
        model, cfg.train.output_dir, trainer=trainer, allow_new_classes=True
    )
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )

    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=args.resume)
    if args.resume and checkpointer.has_checkpoint():
        # The checkpoint stores the iteration that just finished; start at the next one.
        start_iter = trainer.iter + 1
    else:
        start_iter = 0
    # A NaN/Inf loss, offset or checkpoint state ends the run with one TrainingDiverged that
    # names the iteration, the culprit and the checkpoint --resume continues from.
    train_or_explain(trainer, start_iter, cfg.train.max_iter, checkpointer)


def do_eval(args, cfg):
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    checkpointer = DyHeadCheckpointer(model, cfg.train.output_dir)
    if args.resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
    else:
        checkpointer.load(cfg.train.init_checkpoint)
    return do_test(cfg, build_ddp(cfg, model))


def setup(args):
    cfg = load_config(args.config_file, args.opts)
    cfg.train.device = resolve_device(cfg.train.get("device", "auto"))
    return cfg


def main(args):
    cfg = setup(args)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="dyhead_d2")
    if args.eval_only:
        return do_eval(args, cfg)
    apply_schedule_options(cfg)  # train.reference_batch_size, train.epochs
    do_train(args, cfg)


def preflight(args) -> None:
    """Fail fast, in the launching process, on the mistakes a user can make."""
    cfg = setup(args)
    names = dataset_names(cfg.dataloader.test.dataset.names)
    if not args.eval_only:
        names = dataset_names(cfg.dataloader.train.dataset.names) + names
    check_datasets(names)
    check_checkpoint(cfg.train.init_checkpoint)
    has_last = os.path.isfile(os.path.join(cfg.train.output_dir, "last_checkpoint"))
    if args.eval_only and not cfg.train.init_checkpoint and not (args.resume and has_last):
        raise ConfigError(
            "--eval-only needs weights: set train.init_checkpoint=PATH, or add --resume to use "
            f"the last checkpoint in train.output_dir={cfg.train.output_dir!r}"
        )


def invoke_main() -> None:
    args = default_argument_parser().parse_args()
    try:
        preflight(args)
    except ConfigError as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.num_gpus > 1 and not torch.cuda.is_available():
        logger.info(f"No GPU: launching {args.num_gpus} CPU processes (GLOO)")
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except (TrainingDiverged, NonFiniteError) as e:
        print(f"train_net.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    invoke_main()
