"""Turn a still image into a short video with SVD / SVD-XT.

Example (tiny model, random weights, runs in seconds on a CPU):
    python image_to_video.py --config svd_tiny --random-weights --image assets/demo.png --output outputs/demo.mp4
Real weights (the config is read from the checkpoint; --config picks one):
    python image_to_video.py --checkpoint svd_xt.safetensors --image cat.png --output cat.mp4
The image may have any size: --resize cover (default) scales it to cover the video and crops the
centre, --resize stretch scales each axis (nothing cut, shapes distorted).
LoRAs (train.py with train.trainable=lora), each at a scale, unmerged or merged into the weights:
    python image_to_video.py --checkpoint svd.safetensors --lora pan.safetensors:0.8 --lora zoom.safetensors
Long videos (svd/sampling/long_video.py), every model call within the trained length, so memory does not grow with N:
    python image_to_video.py --checkpoint svd_toy.safetensors --interp-checkpoint interp.safetensors \
        --long-video interpolate --num-frames 65         # 5 keyframes, then 5 -> 17 -> 65
    ... --long-video interpolate --num-frames 17 --last-image end.png   # in-between: first and last frame given
    ... --long-video continue --num-frames 40            # chunks, each continuing from the previous one's end
"""
import argparse
import sys
from pathlib import Path

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore is imported)
import mindspore as ms

from svd.cli import run_cli
from svd.io.config import build_model, load_config
from svd.io.media import check_output, read_image, write_video
from svd.io.schema import SAMPLING_SCHEMA, check_positive, check_sampling
from svd.models.lora import parse_lora_spec
from svd.models.memory import set_memory_budget
from svd.models.resize import RESIZE_MODES
from svd.runtime import set_mode
from svd.sampling.long_video import MODES as LONG_VIDEO_MODES, PASS_FPS, LongVideoPipeline, load_interpolation_pipeline
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="svd, svd_xt, svd_tiny or a YAML path (default: svd_tiny with --random-weights, "
                                    "read from the checkpoint otherwise)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="weights: .safetensors/.ckpt (ours or Stability's) or a diffusers folder")
    weights.add_argument("--random-weights", action="store_true", help="seeded random weights (demo and smoke tests)")
    p.add_argument("--image", default="assets/demo.png", help="any size; fitted by --resize")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs (refused otherwise)")
    p.add_argument("--resize", choices=RESIZE_MODES, default="cover",
                   help="cover: scale and centre-crop (default); stretch: scale each axis, nothing cut")
    p.add_argument("--output", nargs="+", default=["outputs/video.mp4"],
                   help="one or more of: .mp4, .gif, a folder for PNG frames (all of the same video)")
    for name, kind in (("num_frames", int), ("num_steps", int), ("height", int), ("width", int), ("fps", int),
                       ("motion_bucket_id", int), ("noise_aug_strength", float), ("decode_chunk_size", int),
                       ("min_guidance_scale", float), ("max_guidance_scale", float)):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help="default: from the config")
    p.add_argument("--guider", choices=["linear", "triangle"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="a LoRA file, at SCALE (default 1); repeat for several")
    p.add_argument("--merge-lora", action="store_true", help="merge the LoRAs into the weights instead of "
                                                             "running them as separate adapters")
    p.add_argument("--mode", choices=["pynative", "graph"], default="pynative")
    p.add_argument("--jit-level", choices=["O0", "O1", "O2"], default="O0", help="graph-mode compile level")
    p.add_argument("--fp16", action="store_true", help="run the UNet in float16 (norms/softmax stay fp32)")
    p.add_argument("--memory-budget-mb", type=float,
                   help="most memory one attention/feed-forward chunk may take (default: auto, 1/16 of free memory)")
    p.add_argument("--split-guidance", action=argparse.BooleanOptionalAction,
                   help="run guidance's two halves as separate UNet calls: half the activation memory "
                        "(default: only when one call would exceed the memory budget)")
    p.add_argument("--no-progress", action="store_true")
    long = p.add_argument_group("long videos (beyond the model's trained length)")
    long.add_argument("--long-video", choices=LONG_VIDEO_MODES,
                      help="interpolate: keyframes from the model, then interpolation passes, N = 1 + (k-1)*4^L; "
                           "continue: chunks of the model's length, each from the previous one's last frames")
    long.add_argument("--interp-checkpoint", help="the keyframe-interpolation model's weights (a base model's "
                                                  "checkpoint gives an untrained one)")
    long.add_argument("--interp-config", help="its config (default: inferred from the weights)")
    long.add_argument("--last-image", help="interpolate: the last frame (the first is --image); N = 1 + 4^L")
    long.add_argument("--keyframes", type=int, help="interpolate: how many keyframes the model makes (default: as "
                                                    "many as fit its length)")
    long.add_argument("--overlap", type=int, help="continue: latents each chunk takes over from the previous one "
                                                  "(default 2)")
    long.add_argument("--pass-fps", choices=PASS_FPS, default="same",
                      help="interpolate: condition every pass on --fps (same, default: models trained at one frame "
                           "rate) or each pass on its own rate, the keyframes on fps / 4^L (scaled)")
    return p.parse_args(argv)


def warn_unusual(options):
    if not 5 <= options.fps <= 30:
        print(f"warning: fps {options.fps} is outside the trained range 5-30", file=sys.stderr)
    if options.motion_bucket_id > 255:
        print(f"warning: motion_bucket_id {options.motion_bucket_id} > 255 is far outside training", file=sys.stderr)


def check_arguments(args):
    """Every number, input file and the output, before any model work (one-line errors naming the option)."""
    check_sampling({k: getattr(args, k) for k in SAMPLING_SCHEMA if k in vars(args)})
    check_positive("--memory-budget-mb", args.memory_budget_mb)
    if args.checkpoint and not Path(args.checkpoint).exists():
        raise FileNotFoundError(f"--checkpoint '{args.checkpoint}' does not exist")
    if args.config:
        load_config(args.config)  # exists and is valid
    loras = [parse_lora_spec(spec) for spec in args.lora]
    for path, _ in loras:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--lora '{path}' does not exist")
    if args.merge_lora and not loras:
        raise ValueError("--merge-lora needs at least one --lora FILE[:SCALE]")
    if len(set(args.output)) < len(args.output):
        raise ValueError(f"--output names the same path twice: {' '.join(args.output)}")
    for output in args.output:
        check_output(output, args.fps, args.overwrite)
    return loras


def check_long_video_arguments(args):
    """The long-video options fit together and their files exist (before any model work)."""
    given = [flag for flag, value in (("--interp-checkpoint", args.interp_checkpoint),
                                      ("--interp-config", args.interp_config), ("--last-image", args.last_image),
                                      ("--keyframes", args.keyframes), ("--overlap", args.overlap))
             if value is not None]
    if not args.long_video:
        if given:
            raise ValueError(f"{given[0]} needs --long-video")
        return
    if args.num_frames is None:
        raise ValueError(f"--long-video {args.long_video} needs --num-frames")
    wrong = [g for g in given if g not in (("--overlap",) if args.long_video == "continue" else
                                           ("--interp-checkpoint", "--interp-config", "--last-image", "--keyframes"))]
    if wrong:
        raise ValueError(f"{wrong[0]} is not an option of --long-video {args.long_video}")
    if args.long_video == "interpolate" and args.checkpoint and not args.interp_checkpoint:
        raise ValueError("--long-video interpolate needs --interp-checkpoint (the keyframe-interpolation model)")
    for flag, path in (("--interp-checkpoint", args.interp_checkpoint), ("--last-image", args.last_image)):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"{flag} '{path}' does not exist")
    if args.interp_config:
        load_config(args.interp_config)


def long_video(args, pipe, image, options):
    """The frames of a --long-video run; the plan (N, keyframes) is checked before the second model loads."""
    chunk_frames = pipe.defaults.num_frames
    runner = LongVideoPipeline(pipe, chunk_frames=chunk_frames)
    progress = not args.no_progress
    if args.long_video == "continue":
        overlap = 2 if args.overlap is None else args.overlap
        return runner.continue_video(image, args.num_frames, options, overlap=overlap, resize_mode=args.resize,
                                     progress=progress)
    last = read_image(args.last_image) if args.last_image else None
    runner.plan(args.num_frames, args.keyframes, last is not None)
    base_cfg = load_config(args.config or pipe.config_name or "svd_tiny")
    interp = load_interpolation_pipeline(base_cfg, args.interp_checkpoint, args.interp_config, seed=args.seed)
    if args.fp16:
        interp.model.unet.to_float(ms.float16)
    runner = LongVideoPipeline(pipe, interp, chunk_frames=chunk_frames)
    return runner.interpolate(image, args.num_frames, options, last_image=last, keyframes=args.keyframes,
                              resize_mode=args.resize, pass_fps=args.pass_fps, progress=progress)


def load_pipeline(args):
    """Seeded random weights of a config, or a checkpoint with its config read from it unless given."""
    if args.checkpoint:
        return ImageToVideoPipeline.from_pretrained(args.checkpoint, args.config)
    cfg = load_config(args.config or "svd_tiny")
    return ImageToVideoPipeline(build_model(cfg, seed=args.seed), SamplingOptions.from_config(cfg.sampling))


def main(argv=None):
    args = parse_args(argv)
    loras = check_arguments(args)
    check_long_video_arguments(args)
    image = read_image(args.image)
    set_mode(args.mode, args.jit_level)
    set_memory_budget(args.memory_budget_mb)
    ms.set_seed(args.seed)
    pipe = load_pipeline(args)
    for path, scale in loras:
        pipe.load_lora(path, scale, merge=args.merge_lora)
    options = pipe.sampling_options(**{k: getattr(args, k) for k in SamplingOptions.__dataclass_fields__
                                       if k in vars(args)})
    warn_unusual(options)
    if args.fp16:
        pipe.model.unet.to_float(ms.float16)
    if args.long_video:
        frames = long_video(args, pipe, image, options)
    else:
        frames = pipe(image, options, resize_mode=args.resize, progress=not args.no_progress)
    for output in args.output:
        out = write_video(frames, output, options.fps)
        print(f"wrote {len(frames)} frames ({options.height}x{options.width}) to {out}")


if __name__ == "__main__":
    run_cli(main)
