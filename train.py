"""Train SVD on your videos (MindSpore graph mode by default): fine-tune its temporal layers, or train
the autoencoder (`train.trainable: vae`, or `vae_decoder` over a fixed latent space) and the UNet
(`unet`, `unet+image_encoder`) from scratch.

    python train.py --config configs/train_tiny.yaml --random-weights data.csv=clips/metadata.csv
    python train.py --config configs/svd_train.yaml --checkpoint svd.safetensors data.csv=clips/metadata.csv
    python train.py --config configs/toy_unet.yaml      # starting weights from the YAML's `init` section
    python train.py --config configs/svd_train.yaml --checkpoint svd.safetensors train.trainable=lora ...
                                                        # LoRA (YAML `lora` section): saves only lora.safetensors
    python train.py ... --resume auto                   # continue from the latest checkpoint of checkpoint.dir
    msrun --worker_num=2 --local_worker_num=2 train.py --distributed ...   # data parallel

Trailing KEY=VALUE arguments override the YAML (OmegaConf dotted keys).
"""
import argparse
import sys
from pathlib import Path

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore is imported)
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.data import VideoClips
from svd.io.checkpoint import save_tensors
from svd.io.config import build_model, load_config
from svd.io.schema import apply_overrides, check_size_multiple, check_train_config, check_writable_folder, load_yaml
from svd.models.interpolation import is_interpolation_model, keyframe_count, load_model_weights
from svd.models.lora import add_lora, is_lora_parameter, lora_tensors, save_lora
from svd.models.memory import set_memory_budget
from svd.runtime import set_mode
from svd.training.log import TrainingLog
from svd.training.sink import sink_dataset
from svd.training.state import CheckpointManager
from svd.training.step import (AUTOENCODER_CHOICES, AutoencoderLoss, CompiledLoss, DiffusionLoss, InterpolationLoss,
                               TrainStep, cosine_schedule, interpolation_step_inputs, latent_scale, select_trainable,
                               step_inputs)

PRECISIONS = {"fp32": ms.float32, "fp16": ms.float16, "bf16": ms.bfloat16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/train_tiny.yaml")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--checkpoint", help="pretrained weights (any layout image_to_video.py accepts)")
    weights.add_argument("--random-weights", action="store_true", help="seeded random backbone (tests, smoke runs)")
    p.add_argument("--resume", help="a step_*.ckpt file, or 'auto' for the latest in checkpoint.dir")
    p.add_argument("--distributed", action="store_true", help="data parallel over the msrun workers")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides of the YAML")
    return p.parse_args(argv)


def load_train_config(path, overrides):
    """The training YAML with its overrides, every value checked (svd.io.schema): one-line errors name the key."""
    cfg = apply_overrides(load_yaml(path, "training config"), overrides, path)
    return check_train_config(cfg, path)


def check_paths(args, cfg):
    """The command line's files and the run's folder, before any model work."""
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint '{args.checkpoint}' does not exist")
    if args.resume and args.resume != "auto":
        resume = Path(args.resume)
        if not resume.is_file():
            raise FileNotFoundError(f"resume checkpoint '{resume}' does not exist (or pass --resume auto)")
        if resume.suffix != ".ckpt":
            raise ValueError(f"--resume '{resume}': expected a step_*.ckpt training checkpoint or 'auto'")
    init_path = OmegaConf.select(cfg, "init.load.path")
    if init_path and not Path(init_path).is_file():
        raise FileNotFoundError(f"init.load.path '{init_path}' does not exist (train that stage first)")
    check_writable_folder(cfg.checkpoint.dir, "checkpoint.dir")
    model = load_config(cfg.model_config).model  # a valid model config, and clip sizes that fit it
    multiple = 2 ** (len(model.vae.ch_mult) - 1)
    if cfg.train.trainable not in AUTOENCODER_CHOICES:
        multiple *= 2 ** (len(model.unet.channel_mult) - 1)
    check_size_multiple(cfg, multiple, args.config)


def set_up_runtime(cfg, distributed):
    """Execution mode, and for data parallel the collective init; returns (rank, world size)."""
    set_mode(cfg.runtime.mode, cfg.runtime.jit_level)
    set_memory_budget(cfg.runtime.get("memory_budget_mb"))
    if not distributed:
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init
    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()


def starting_model(cfg, args, model_cfg):
    """The model with its starting weights, and a name for them that a resume must match.

    ``--checkpoint`` loads everything, ``--random-weights`` seeds everything, and a YAML ``init``
    section seeds everything and then loads the listed parts (e.g. the trained VAE) from a file.
    """
    if args.checkpoint:
        model = build_model(model_cfg, lazy=True)
        load_model_weights(model, args.checkpoint, model_cfg.model)
        return model, args.checkpoint
    if args.random_weights:
        return build_model(model_cfg, seed=cfg.train.seed), f"random:{cfg.train.seed}"
    init = cfg.get("init")
    if init is None:
        raise ValueError(f"give --checkpoint or --random-weights, or an 'init' section in {args.config}")
    model = build_model(model_cfg, seed=init.random_seed)
    base = f"random:{init.random_seed}"
    if init.get("load"):
        parts = tuple(f"{part}." for part in init.load.parts)
        load_model_weights(model, init.load.path, model_cfg.model, prefixes=parts)
        base += f"+{init.load.path}[{','.join(init.load.parts)}]"
    return model, base


def build_training(cfg, args, world_size, clips):
    """Model with weights, trainable selection, optimizer and the train step."""
    model_cfg = load_config(cfg.model_config)
    ms.set_seed(cfg.train.seed)
    model, base = starting_model(cfg, args, model_cfg)
    trainable_choice = cfg.train.trainable
    if trainable_choice == "lora":
        lora = cfg.get("lora")
        if lora is None:
            raise ValueError(f"train.trainable: lora needs a 'lora' section (rank, alpha, targets) in {args.config}")
        add_lora(model, lora.get("rank"), lora.get("alpha"), lora.get("targets"), seed=cfg.train.seed)
    trainable = select_trainable(model, trainable_choice)
    if trainable_choice not in AUTOENCODER_CHOICES and cfg.train.get("latent_scale") == "auto":
        model.scale_factor = latent_scale(model, clips)
        print(f"latent scale factor: {model.scale_factor:.6f} (1 / std of the posterior means)")
    precision = cfg.train.precision
    if precision not in PRECISIONS:
        raise ValueError(f"train.precision must be one of {sorted(PRECISIONS)}, got '{precision}'")
    if precision != "fp32":
        model.unet.to_float(PRECISIONS[precision])
    if cfg.train.recompute:
        for block in list(model.unet.input_blocks) + [model.unet.middle_block] + list(model.unet.output_blocks):
            block.recompute()
    opt = cfg.optimizer
    optimizer_steps = max(1, cfg.train.steps // cfg.train.accumulation_steps)
    rates = cosine_schedule(opt.lr, opt.end_lr, opt.warmup_steps, optimizer_steps)
    optimizer = nn.AdamWeightDecay(trainable, learning_rate=rates, beta1=opt.betas[0], beta2=opt.betas[1],
                                   eps=opt.eps, weight_decay=opt.weight_decay)
    t = cfg.train
    if trainable_choice in AUTOENCODER_CHOICES:
        loss = AutoencoderLoss(model, t.get("kl_weight", 1e-6))
    else:
        loss_class = DiffusionLoss
        first_frame_weight = t.get("first_frame_weight", 1.0)
        if is_interpolation_model(model):  # keyframe interpolation (svd.models.interpolation): (k-1)*4+1 frames
            try:
                keyframe_count(cfg.data.num_frames)
            except ValueError as err:
                raise ValueError(f"{args.config}: data.num_frames: {err}") from None
            loss_class = InterpolationLoss
            if first_frame_weight != 1.0:
                raise ValueError(f"{args.config}: train.first_frame_weight must be 1 for an interpolation model "
                                 "(every keyframe is conditioning, not only frame 0)")
        loss = loss_class(model, cfg.data.height, cfg.data.width, trainable_choice == "unet+image_encoder",
                          first_frame_weight)
    if cfg.runtime.get("compile_loss") and cfg.runtime.mode == "pynative":
        loss = CompiledLoss(loss, cfg.runtime.get("jit_level") or "O0")
    step = TrainStep(loss, optimizer, t.accumulation_steps, t.clip_norm, t.loss_scale, t.dynamic_loss_scale,
                     t.scale_factor, t.scale_window, t.ema_decay, distributed=world_size > 1)
    step.set_train()
    frozen = {p.name for p in model.get_parameters() if not p.requires_grad}
    return model, step, frozen, base


def export_weights(model, train_step, out_dir, cfg):
    """All model weights with our names in final.safetensors, or for `trainable: lora` only the adapters in
    lora.safetensors (the base weights are the starting checkpoint's); EMA weights substituted when EMA is on.
    Returns the path."""
    lora = cfg.train.trainable == "lora"
    state = {p.name: p.asnumpy() for p in model.get_parameters() if not lora or is_lora_parameter(p.name)}
    if cfg.train.ema_decay > 0:
        for ema in train_step.ema:
            state[ema.name[len("ema."):]] = ema.asnumpy()
    if lora:
        path = out_dir / "lora.safetensors"
        save_lora(lora_tensors(state), path, cfg.lora.rank, cfg.lora.alpha, cfg.lora.targets)
    else:
        path = out_dir / "final.safetensors"
        save_tensors(state, path)
    return path


def run_steps(cfg, train_step, clips, model, start, rank, world, log):
    """The step loop; dataset sink mode where the backend has it."""
    d, t = cfg.data, cfg.train
    make = lambda s: step_inputs(clips, s, d.batch_size, t.seed, rank, world, cfg.noise, model.latent_channels,
                                 model.downscale, t.get("cond_dropout", 0.0))
    if is_interpolation_model(model) and t.trainable not in AUTOENCODER_CHOICES:
        make = lambda s: interpolation_step_inputs(clips, s, d.batch_size, t.seed, rank, world, cfg.noise,
                                                   model.latent_channels, model.downscale, t.get("cond_dropout", 0.0),
                                                   OmegaConf.select(cfg, "interpolation.min_keyframes"))
    if cfg.runtime.sink and ms.get_context("device_target") == "CPU":
        print("note: dataset sink mode is not available on MindSpore's CPU backend; stepping from the host",
              file=sys.stderr)
    if cfg.runtime.sink and ms.get_context("device_target") != "CPU":
        # Streamed: each step's inputs are built when the sink asks for them, not all up front.
        sunk = ms.data_sink(train_step, sink_dataset(make, start, t.steps), sink_size=cfg.runtime.sink_size)
        for done in range(start + cfg.runtime.sink_size, t.steps + 1, cfg.runtime.sink_size):
            log(done, *sunk())
        return
    for step in tqdm(range(start, t.steps), desc="training", disable=rank != 0):
        log(step + 1, *train_step(*[Tensor(x) for x in make(step)]))


def main(argv=None):
    args = parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    check_paths(args, cfg)
    manager = CheckpointManager(cfg.checkpoint.dir, cfg.checkpoint.keep)
    if not args.resume and manager.saved():
        raise FileExistsError(f"checkpoint.dir '{cfg.checkpoint.dir}' holds another run's checkpoints: "
                              "continue it with --resume auto, or choose another checkpoint.dir")
    rank, world = set_up_runtime(cfg, args.distributed)
    if rank == 0:
        manager.clean_up()
    d = cfg.data
    clips = VideoClips(d.csv, d.num_frames, d.frame_stride, d.height, d.width, root=d.root, crop=d.get("crop"))
    model, train_step, frozen, base = build_training(cfg, args, world, clips)
    if args.random_weights:
        frozen = set()
    start = 0
    if args.resume:
        # auto: the newest checkpoint that reads back intact (checksum), a damaged newer one skipped with a warning
        found = manager.latest_intact() if args.resume == "auto" else (args.resume, None)
        if found is not None:
            resume, contents = found
            start = manager.load(resume, train_step, frozen, base, contents)
            print(f"resumed from {resume} at step {start}")
    out_dir = Path(cfg.checkpoint.dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = TrainingLog(out_dir / f"log_rank{rank}.csv", start)

    def record(step, loss, overflow, scale):
        # The weight norm is identical on every rank exactly when gradients are all-reduced.
        norm = float(np.sqrt(sum(float((p.asnumpy().astype(np.float64) ** 2).sum()) for p in train_step.weights)))
        log.write(step, float(loss.asnumpy()), int(overflow.asnumpy()), float(scale.asnumpy()), norm)
        if rank == 0 and (step % cfg.checkpoint.every == 0 or step == cfg.train.steps):
            manager.save(train_step, step, frozen, base)
            log.plot(out_dir / "loss.png", f"{Path(args.config).stem}: {cfg.train.trainable}")

    run_steps(cfg, train_step, clips, model, start, rank, world, record)
    log.close()
    if rank == 0:
        weights = export_weights(model, train_step, out_dir, cfg)
        (out_dir / "model_overrides.yaml").write_text(f"model:\n  scale_factor: {model.scale_factor:.6f}\n")
        print(f"done: {cfg.train.steps} steps, {clips.skipped} unreadable videos skipped, weights in {weights}")


if __name__ == "__main__":
    run_cli(main)
