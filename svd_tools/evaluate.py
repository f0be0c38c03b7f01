"""Score a checkpoint on held-out clips (never trained on) and write the numbers (JSON + Markdown).

VAE: reconstruction PSNR/SSIM of every held-out frame against an 8x bicubic down/up baseline.
Generation, from each held-out clip's first frame: PSNR of frame 0 against the input, motion (mean
Farneback flow, mean absolute frame difference) next to the real continuation, and temporal
consistency (flow-warping error) of the video, the real clip and the same config's random weights.

    python -m svd_tools.evaluate --checkpoint models/svd_toy.safetensors --config svd_toy
"""
import argparse
import json
from pathlib import Path

import numpy as np
from mindspore import Tensor
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.data import read_frames, read_metadata, resize_cover_crop
from svd.io.checkpoint import load_weights
from svd.io.config import build_model, load_config
from svd.metrics import bicubic_baseline, mean_flow, mean_frame_difference, psnr, ssim, warping_error
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions


def heldout_clips(csv_path, height, width, root=None):
    """``(name, frames (T, H, W, 3) in [0, 1], fps, motion_bucket_id)`` of every clip in the CSV."""
    table = read_metadata(csv_path)
    root = Path(root) if root else Path(csv_path).resolve().parent
    clips = []
    for row in table.itertuples():
        frames, fps = read_frames(root / row.path, 0, int(row.length), 1)
        if frames is None:
            raise ValueError(f"{csv_path}: held-out video '{row.path}' cannot be read")
        video = np.stack([resize_cover_crop(f, height, width) for f in frames]).astype(np.float32) / 255.0
        clips.append((Path(row.path).stem, video, fps, int(row.motion_bucket_id)))
    return clips


def reconstruct(model, frames, chunk):
    """Posterior mean through the temporal decoder, ``chunk`` frames at a time."""
    out = []
    for start in range(0, len(frames), chunk):
        pixels = Tensor(frames[start:start + chunk].transpose(0, 3, 1, 2) * 2.0 - 1.0)
        mean, _ = model.vae.encode_moments(pixels)
        decoded = model.vae.decode(mean, pixels.shape[0]).asnumpy()
        out.append(np.clip((decoded.transpose(0, 2, 3, 1) + 1.0) / 2.0, 0.0, 1.0))
    return np.concatenate(out)


def autoencoder_scores(model, clips, chunk):
    scores = {"psnr": [], "ssim": [], "baseline_psnr": [], "baseline_ssim": []}
    for _, frames, _, _ in tqdm(clips, desc="autoencoder"):
        for real, rec in zip(frames, reconstruct(model, frames, chunk)):
            base = bicubic_baseline(real)
            scores["psnr"].append(psnr(real, rec))
            scores["ssim"].append(ssim(real, rec))
            scores["baseline_psnr"].append(psnr(real, base))
            scores["baseline_ssim"].append(ssim(real, base))
    return {k: float(np.mean(v)) for k, v in scores.items()} | {"frames": len(scores["psnr"])}


def video_scores(video, real):
    return {"frame0_psnr": psnr(video[0], real[0]), "frame_difference": mean_frame_difference(video),
            "flow": mean_flow(video), "warping_error": warping_error(video)}


def generation_scores(pipe, random_pipe, clips, options):
    """Per-clip numbers for generated, real and random-weight videos of ``options.num_frames`` frames."""
    rows = []
    for name, frames, fps, bucket in tqdm(clips, desc="generation"):
        real = frames[:options.num_frames]
        run = SamplingOptions(**{**vars(options), "fps": int(round(fps)), "motion_bucket_id": bucket})
        first = (real[0] * 255).round().astype(np.uint8)
        video = pipe(first, run, progress=False)
        noise_video = random_pipe(first, run, progress=False)
        rows.append({"clip": name, "generated": video_scores(video, real), "real": video_scores(real, real),
                     "random_weights": video_scores(noise_video, real)})
    return rows


def summarise(rows):
    keys = rows[0]["generated"].keys()
    return {kind: {k: float(np.mean([r[kind][k] for r in rows])) for k in keys}
            for kind in ("generated", "real", "random_weights")}


def markdown(result):
    ae = result["autoencoder"]
    lines = ["| autoencoder, held-out frames | PSNR dB | SSIM |", "|---|---|---|",
             f"| ours ({ae['frames']} frames) | {ae['psnr']:.2f} | {ae['ssim']:.3f} |",
             f"| 8x bicubic down/up | {ae['baseline_psnr']:.2f} | {ae['baseline_ssim']:.3f} |"]
    if "generation" not in result:
        return "\n".join(lines) + "\n"
    gen = result["generation"]["mean"]
    lines += ["", "| video from a held-out first frame | frame-0 PSNR dB | mean abs frame diff | mean flow px "
             "| warping error |", "|---|---|---|---|---|"]
    for kind, label in (("generated", "ours"), ("real", "real continuation"), ("random_weights", "random weights")):
        g = gen[kind]
        frame0 = "-" if kind == "real" else f"{g['frame0_psnr']:.2f}"
        lines.append(f"| {label} | {frame0} | {g['frame_difference']:.4f} | {g['flow']:.3f} | "
                     f"{g['warping_error']:.4f} |")
    return "\n".join(lines) + "\n"


def evaluate(checkpoint, config, csv_path, seed=0, max_clips=None, num_steps=None, generation=True):
    cfg = load_config(config)
    options = SamplingOptions.from_config(cfg.sampling, seed=seed, num_steps=num_steps)
    model = build_model(cfg, lazy=True)
    load_weights(model, checkpoint, cfg.model)
    model.set_train(False)
    clips = heldout_clips(csv_path, options.height, options.width)[:max_clips]
    result = {"checkpoint": str(checkpoint), "config": str(config), "data": str(csv_path),
              "autoencoder": autoencoder_scores(model, clips, options.decode_chunk_size)}
    if not generation:
        return result
    rows = generation_scores(ImageToVideoPipeline(model), ImageToVideoPipeline(build_model(cfg, seed=seed)),
                             clips, options)
    result["generation"] = {"clips": rows, "mean": summarise(rows)}
    return result


def write_report(result, table, output):
    """``OUTPUT.json`` (the numbers) and ``OUTPUT.md`` (the table, also printed)."""
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(table)
    print(table)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--config", default="svd_toy")
    p.add_argument("--data", default="data/toy/heldout.csv", help="held-out CSV (svd_tools.build_toy_dataset)")
    p.add_argument("--output", default="outputs/eval/toy", help="writes OUTPUT.json and OUTPUT.md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-clips", type=int, help="score only the first N held-out clips (quick checks)")
    p.add_argument("--num-steps", type=int, help="sampling steps (default: the config's)")
    p.add_argument("--autoencoder-only", action="store_true", help="score the VAE only (a stage-1 checkpoint)")
    args = p.parse_args(argv)
    result = evaluate(args.checkpoint, args.config, args.data, args.seed, args.max_clips, args.num_steps,
                      not args.autoencoder_only)
    write_report(result, markdown(result), args.output)


if __name__ == "__main__":
    run_cli(main)
