"""Score the long-video modes on trained models and write their numbers and frame strips.

- interpolate to 65 frames (5 keyframes, 2 passes): PSNR of the decoded frames at the keyframe positions
  against the keyframes decoded on their own (the base model's keyframe video);
- in-betweening (--last-image, 17 frames): PSNR of the first and last frames against the two images;
- continue (3 chunks): mean frame difference across the seams against the one inside chunks;
- peak resident memory of a 65-frame interpolate run against a 17-frame one, each in a fresh process.

    python -m svd_tools.evaluate_long_video --checkpoint models/svd_toy.safetensors \\
        --interp-checkpoint models/svd_toy_interp.safetensors --clip cockatoo_3
"""
import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.config import load_config
from svd.interpolation import KEYFRAME_SPACING
from svd.long_video import LongVideoPipeline, continuation_seams, decode_windows, load_interpolation_pipeline, seam_report
from svd.media import write_video
from svd.metrics import psnr
from svd.pipeline import ImageToVideoPipeline
from svd_tools.evaluate import heldout_clips

STRIP_FRAMES = 17  # a 65-frame strip shows every 4th frame


def runner_for(checkpoint, interp_checkpoint, config):
    pipe = ImageToVideoPipeline.from_pretrained(checkpoint, config)
    interp = load_interpolation_pipeline(load_config(config), interp_checkpoint)
    return LongVideoPipeline(pipe, interp, chunk_frames=pipe.defaults.num_frames)


def keyframe_scores(runner, image, options, num_frames=65):
    """The interpolated video and the PSNR of each keyframe position against the keyframes decoded alone."""
    latents = runner.interpolate(image, num_frames, options, output_type="latent", progress=False)
    model = runner.base.model
    frames = decode_windows(model, latents, options.decode_chunk_size)
    _, passes = runner.plan(num_frames)
    positions = list(range(0, num_frames, KEYFRAME_SPACING ** passes))
    alone = decode_windows(model, latents[positions], options.decode_chunk_size)
    return frames, [psnr(frames[p], key) for p, key in zip(positions, alone)]


def sampling_options(runner, args):
    options = runner.base.defaults.updated(seed=args.seed)
    return options.updated(num_steps=args.num_steps) if args.num_steps else options


def memory_run(args):
    """One interpolate run of ``args.memory_run`` frames in this process; prints its peak RSS in MiB."""
    runner = runner_for(args.checkpoint, args.interp_checkpoint, args.config)
    options = sampling_options(runner, args)
    runner.interpolate(args.image_file, args.memory_run, options, progress=False)
    print(json.dumps({"frames": args.memory_run, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(args, image_file, num_frames):
    command = [sys.executable, "-m", "svd_tools.evaluate_long_video", "--checkpoint", args.checkpoint,
               "--interp-checkpoint", args.interp_checkpoint, "--config", args.config, "--seed", str(args.seed),
               "--image-file", str(image_file), "--memory-run", str(num_frames)]
    if args.num_steps:
        command += ["--num-steps", str(args.num_steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the {num_frames}-frame memory run failed: {done.stderr.strip().splitlines()[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mib"]


def markdown(result):
    key, ends, seams, memory = result["keyframes"], result["last_image"], result["continue"], result["memory"]
    return "\n".join([
        "| long-video check | measured | target |", "|---|---|---|",
        f"| interpolate 65: keyframe positions vs keyframes decoded alone, min PSNR | {min(key['psnr']):.2f} dB "
        f"(mean {np.mean(key['psnr']):.2f}) | >= 30 dB |",
        f"| --last-image 17: first / last frame vs the two images | {ends['first_psnr']:.2f} / {ends['last_psnr']:.2f} dB"
        " | >= 22 dB |",
        f"| continue, 3 chunks: seam / in-chunk frame difference | {seams['ratio']:.2f} ({seams['seam']:.4f} / "
        f"{seams['inside']:.4f}) | <= 2 |",
        f"| peak RSS, interpolate 65 vs 17 frames | {memory[65]:.0f} / {memory[17]:.0f} MiB "
        f"({memory[65] / memory[17]:.2f}x) | <= 1.3x |", ""])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="models/svd_toy.safetensors")
    p.add_argument("--interp-checkpoint", default="models/svd_toy_interp.safetensors")
    p.add_argument("--config", default="svd_toy")
    p.add_argument("--data", default="data/toy/heldout.csv", help="held-out CSV (svd_tools.build_toy_dataset)")
    p.add_argument("--clip", default="cockatoo_3", help="held-out clip: its first frame starts every video, its "
                   "last frame ends the --last-image one")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-steps", type=int, help="sampling steps (default: the config's)")
    p.add_argument("--output", default="outputs/eval/long_video", help="writes OUTPUT.json and OUTPUT.md")
    p.add_argument("--strips", default="assets/long_video", help="folder for the frame strips")
    p.add_argument("--image-file", help=argparse.SUPPRESS)
    p.add_argument("--memory-run", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_run:
        return memory_run(args)
    runner = runner_for(args.checkpoint, args.interp_checkpoint, args.config)
    options = sampling_options(runner, args)
    clips = {name: frames for name, frames, _, _ in heldout_clips(args.data, options.height, options.width)}
    if args.clip not in clips:
        raise ValueError(f"--clip '{args.clip}' is not in {args.data}; its clips: {', '.join(clips)}")
    first, last = clips[args.clip][0], clips[args.clip][-1]
    strips = Path(args.strips)
    strips.mkdir(parents=True, exist_ok=True)
    image_file = strips / f"{args.clip}_first.png"
    write_video(first[None], image_file, 1)
    write_video(last[None], strips / f"{args.clip}_last.png", 1)
    result = {"checkpoint": args.checkpoint, "interp_checkpoint": args.interp_checkpoint, "clip": args.clip,
              "seed": args.seed}
    with tqdm(total=5, desc="long-video checks") as bar:
        video, scores = keyframe_scores(runner, first, options)
        result["keyframes"] = {"psnr": scores}
        write_video(video[::(len(video) - 1) // (STRIP_FRAMES - 1)], strips / "interpolate_65.png", 1)
        bar.update()
        video = runner.interpolate(first, 17, options, last_image=last, progress=False)
        result["last_image"] = {"first_psnr": psnr(video[0], first), "last_psnr": psnr(video[-1], last)}
        write_video(video, strips / "last_image_17.png", 1)
        bar.update()
        t = runner.chunk_frames
        overlap = 2
        n = t + 2 * (t - overlap)
        video = runner.continue_video(first, n, options, overlap=overlap, progress=False)
        result["continue"] = seam_report(video, continuation_seams(n, t, overlap)) | {"frames": n}
        write_video(video, strips / f"continue_{n}.png", 1)
        bar.update()
        result["memory"] = {}
        for frames in (17, 65):
            result["memory"][frames] = peak_memory(args, image_file, frames)
            bar.update()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    run_cli(main)
