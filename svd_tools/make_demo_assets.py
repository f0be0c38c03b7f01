"""Write the demo's inputs from one held-out clip of the toy data set (never trained on) into assets/toy_demo/.

- ``CLIP.png``: the clip's first frame at the data set's resolution: the photo `make demo` animates;
- ``CLIP_real.png``: the clip's first ``num_frames`` frames at the model's resolution, side by side: the real
  continuation that tests/test_toy_model.py compares the demo's motion and coherence with;
- ``demo.json``: the image_to_video.py arguments of the demo (the clip's frame rate and motion bucket),
  read by both `make demo` (svd_tools.demo) and the test.

    python -m svd_tools.make_demo_assets --clip cockatoo_3
"""
import argparse
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from svd.cli import run_cli
from svd.data import read_frames, read_metadata
from svd.io.config import load_config
from svd_tools.evaluate import heldout_clips

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clip", required=True, help="a held-out clip's name (its file name without suffix)")
    p.add_argument("--data", default="data/toy/heldout.csv")
    p.add_argument("--config", default="svd_toy")
    p.add_argument("--checkpoint", default="models/svd_toy.safetensors")
    p.add_argument("--output", default=str(ROOT / "assets" / "toy_demo"))
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    sampling = load_config(args.config).sampling
    table = read_metadata(args.data)
    names = [Path(path).stem for path in table["path"]]
    if args.clip not in names:
        raise ValueError(f"--clip '{args.clip}' is not in {args.data}; its clips: {', '.join(names)}")
    row = table.iloc[names.index(args.clip)]
    first, _ = read_frames(Path(args.data).resolve().parent / row["path"], 0, 1, 1)
    _, real, fps, bucket = next(c for c in heldout_clips(args.data, sampling.height, sampling.width)
                                if c[0] == args.clip)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    image, strip = out / f"{args.clip}.png", out / f"{args.clip}_real.png"
    iio.imwrite(image, first[0])
    iio.imwrite(strip, np.concatenate(list((real[:sampling.num_frames] * 255).round().astype(np.uint8)), axis=1))
    relative = lambda path: str(Path(path).resolve().relative_to(ROOT))
    fps = int(round(fps))
    demo = {"clip": args.clip, "image": relative(image), "real_frames": relative(strip), "config": args.config,
            "seed": args.seed, "fps": fps, "motion_bucket_id": int(bucket),
            "arguments": ["--checkpoint", args.checkpoint, "--config", args.config, "--image", relative(image),
                          "--fps", str(fps), "--motion-bucket-id", str(int(bucket)), "--seed", str(args.seed)]}
    (out / "demo.json").write_text(json.dumps(demo, indent=1) + "\n")
    print(f"wrote {image}, {strip} and {out / 'demo.json'}")


if __name__ == "__main__":
    run_cli(main)
