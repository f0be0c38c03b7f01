"""Score the long-video modes on trained models and write their numbers and frame strips.

- interpolate to 65 frames (5 keyframes, 2 passes): PSNR of the decoded frames at the keyframe positions
  against the keyframes decoded on their own (the base model's keyframe video);
- in-betweening (--last-image, 17 frames): PSNR of the first and last frames against the two images;
- continue (3 chunks): mean frame difference across the seams against the one inside chunks;
- in-betweening real keyframes (every 4th frame of each held-out clip's first 17 frames): PSNR of the frames
  between them against the real ones, for the trained interpolation model, the untrained one (grown from the
  base weights) and a linear cross-fade of the keyframes;
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
from mindspore import Tensor
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.io.config import load_config
from svd.io.media import write_video
from svd.metrics import psnr
from svd.models.interpolation import KEYFRAME_SPACING
from svd.sampling.long_video import (LongVideoPipeline, continuation_seams, decode_windows, load_interpolation_pipeline,
                                     seam_report)
from svd.sampling.pipeline import ImageToVideoPipeline, to_model_range
from svd_tools.evaluate import heldout_clips, write_report

STRIP_FRAMES = 17  # a 65-frame strip shows every 4th frame


def runner_for(checkpoint, interp_checkpoint, config):
    pipe = ImageToVideoPipeline.from_pretrained(checkpoint, config)
    interp = load_interpolation_pipeline(load_config(config), interp_checkpoint)
    return LongVideoPipeline(pipe, interp)


def keyframe_scores(runner, image, options, num_frames=65):
    """The interpolated video and the PSNR of each keyframe position against the keyframes decoded alone."""
    latents = runner.interpolate(image, num_frames, options, output_type="latent", progress=False)
    model = runner.base.model
    frames = decode_windows(model, latents, options.decode_chunk_size)
    _, passes = runner.plan(num_frames)
    positions = list(range(0, num_frames, KEYFRAME_SPACING ** passes))
    alone = decode_windows(model, latents[positions], options.decode_chunk_size)
    return frames, [psnr(frames[p], key) for p, key in zip(positions, alone)]


def inbetween_scores(runners, clips, options, window=17, windows_per_clip=3):
    """``{method: {clip@start: mean PSNR of the in-between frames}}``: up to ``windows_per_clip`` disjoint windows of
    ``window`` real frames per clip, their keyframes (every 4th) encoded and run through one interpolation pass of
    each runner, the frames between the keyframes scored against the real ones; ``cross-fade`` blends the decoded
    keyframes linearly instead."""
    scores = {name: {} for name in [*runners, "cross-fade"]}
    between = [i for i in range(window) if i % KEYFRAME_SPACING]
    starts = [(clip, start) for clip, frames in clips.items()
              for start in list(range(0, len(frames) - window + 1, window))[:windows_per_clip]]
    model = next(iter(runners.values())).base.model  # the runners share the base model (VAE, latent scale)
    for clip, start in tqdm(starts, desc="in-betweening", leave=False):
        real = clips[clip][start:start + window]
        clip = f"{clip}@{start}"
        keys = np.concatenate([model.scale_factor * model.condition_latent(Tensor(to_model_range(frame))).asnumpy()
                               for frame in real[::KEYFRAME_SPACING]])
        for name, runner in runners.items():
            latents = runner.interpolation_pass(keys, options, np.random.default_rng(options.seed), options.fps,
                                                to_model_range(real[0]))
            video = decode_windows(model, latents, options.decode_chunk_size)
            scores[name][clip] = float(np.mean([psnr(video[i], real[i]) for i in between]))
        decoded = decode_windows(model, keys, options.decode_chunk_size)
        fades = []
        for i in between:
            left, offset = divmod(i, KEYFRAME_SPACING)
            weight = offset / KEYFRAME_SPACING
            fades.append(psnr((1 - weight) * decoded[left] + weight * decoded[left + 1], real[i]))
        scores["cross-fade"][clip] = float(np.mean(fades))
    return scores


def memory_run(args):
    """One interpolate run of ``args.memory_run`` frames in this process; prints its peak RSS in MiB."""
    runner = runner_for(args.checkpoint, args.interp_checkpoint, args.config)
    options = runner.base.defaults.updated(seed=args.seed, num_steps=args.num_steps)  # None keeps the config's
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
    inbetween = result["inbetween_psnr"]
    return "\n".join([
        "| long-video check | measured | target |", "|---|---|---|",
        f"| interpolate 65: keyframe positions vs keyframes decoded alone, min PSNR | {min(key['psnr']):.2f} dB "
        f"(mean {np.mean(key['psnr']):.2f}) | >= 30 dB |",
        f"| --last-image 17: first / last frame vs the two images | {ends['first_psnr']:.2f} / {ends['last_psnr']:.2f} dB"
        " | >= 22 dB |",
        f"| continue, 3 chunks: seam / in-chunk frame difference | {seams['ratio']:.2f} ({seams['seam']:.4f} / "
        f"{seams['inside']:.4f}) | <= 2 |",
        f"| peak RSS, interpolate 65 vs 17 frames | {memory[65]:.0f} / {memory[17]:.0f} MiB "
        f"({memory[65] / memory[17]:.2f}x) | <= 1.3x |", "",
        "| in-betweening real keyframes (held-out, 17 frames) | " + " | ".join(inbetween["cross-fade"]) + " | mean |",
        "|---|" + "---|" * (len(inbetween["cross-fade"]) + 1)]
        + [f"| {name} | " + " | ".join(f"{v:.2f}" for v in per_clip.values()) + f" | {np.mean(list(per_clip.values())):.2f} |"
           for name, per_clip in inbetween.items()] + [""])


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
    options = runner.base.defaults.updated(seed=args.seed, num_steps=args.num_steps)  # None keeps the config's
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
    with tqdm(total=6, desc="long-video checks") as bar:
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
        untrained = load_interpolation_pipeline(load_config(args.config), args.checkpoint)
        result["inbetween_psnr"] = inbetween_scores(
            {"trained interpolation model": runner, "untrained (base weights)": LongVideoPipeline(runner.base, untrained)},
            clips, options)
        bar.update()
        result["memory"] = {}
        for frames in (17, 65):
            result["memory"][frames] = peak_memory(args, image_file, frames)
            bar.update()
    write_report(result, markdown(result), args.output)


if __name__ == "__main__":
    run_cli(main)
