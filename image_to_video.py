"""Turn a still image into a short video with SVD / SVD-XT.

Example (tiny model, random weights, runs in seconds on a CPU):
    python image_to_video.py --config svd_tiny --random-weights --image assets/demo.png --output outputs/demo.mp4
Real weights (the config is read from the checkpoint; --config picks one):
    python image_to_video.py --checkpoint svd_xt.safetensors --image cat.png --output cat.mp4
The image may have any size: --resize cover (default) scales it to cover the video and crops the
centre, --resize stretch scales each axis (nothing cut, shapes distorted).
LoRAs (train.py with train.trainable=lora), each at a scale, unmerged or merged into the weights:
    python image_to_video.py --checkpoint svd.safetensors --lora pan.safetensors:0.8 --lora zoom.safetensors
"""
import argparse
import sys

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore is imported)
import mindspore as ms

from svd.cli import run_cli
from svd.config import build_model, load_config
from svd.lora import parse_lora_spec
from svd.memory import set_memory_budget
from svd.media import output_kind, read_image, write_video
from svd.pipeline import ImageToVideoPipeline, SamplingOptions
from svd.resize import RESIZE_MODES
from svd.runtime import set_mode


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="svd, svd_xt, svd_tiny or a YAML path (default: svd_tiny with --random-weights, "
                                    "read from the checkpoint otherwise)")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--checkpoint", help="weights: .safetensors/.ckpt (ours or Stability's) or a diffusers folder")
    weights.add_argument("--random-weights", action="store_true", help="seeded random weights (demo and smoke tests)")
    p.add_argument("--image", default="assets/demo.png", help="any size; fitted by --resize")
    p.add_argument("--resize", choices=RESIZE_MODES, default="cover",
                   help="cover: scale and centre-crop (default); stretch: scale each axis, nothing cut")
    p.add_argument("--output", default="outputs/video.mp4", help=".mp4, .gif, or a folder for PNG frames")
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
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def warn_unusual(options):
    if not 5 <= options.fps <= 30:
        print(f"warning: fps {options.fps} is outside the trained range 5-30", file=sys.stderr)
    if options.motion_bucket_id > 255:
        print(f"warning: motion_bucket_id {options.motion_bucket_id} > 255 is far outside training", file=sys.stderr)


def load_pipeline(args):
    """Seeded random weights of a config, or a checkpoint with its config read from it unless given."""
    if args.checkpoint:
        return ImageToVideoPipeline.from_pretrained(args.checkpoint, args.config)
    cfg = load_config(args.config or "svd_tiny")
    return ImageToVideoPipeline(build_model(cfg, seed=args.seed), SamplingOptions.from_config(cfg.sampling))


def main(argv=None):
    args = parse_args(argv)
    set_mode(args.mode, args.jit_level)
    set_memory_budget(args.memory_budget_mb)
    output_kind(args.output)
    image = read_image(args.image)
    ms.set_seed(args.seed)
    loras = [parse_lora_spec(spec) for spec in args.lora]
    if args.merge_lora and not loras:
        raise ValueError("--merge-lora needs at least one --lora FILE[:SCALE]")
    pipe = load_pipeline(args)
    for path, scale in loras:
        pipe.load_lora(path, scale, merge=args.merge_lora)
    options = pipe.sampling_options(**{k: getattr(args, k) for k in SamplingOptions.__dataclass_fields__
                                       if k in vars(args)})
    warn_unusual(options)
    if args.fp16:
        pipe.model.unet.to_float(ms.float16)
    frames = pipe(image, options, resize_mode=args.resize, progress=not args.no_progress)
    out = write_video(frames, args.output, options.fps)
    print(f"wrote {len(frames)} frames ({options.height}x{options.width}) to {out}")


if __name__ == "__main__":
    run_cli(main)
