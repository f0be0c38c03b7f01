"""`make demo`: the shipped toy model animates a held-out real photo (never trained on), offline.

The arguments live in assets/toy_demo/demo.json, which tests/test_toy_model.py runs too, so the demo and
its test cannot drift apart.

    python -m svd_tools.demo [--output outputs/demo.mp4 outputs/demo.gif] [--comparison assets/toy_demo/demo_strip.png]
"""
import argparse
import json
import tempfile
from pathlib import Path

import imageio.v3 as iio
import numpy as np

import image_to_video
from svd.cli import run_cli

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "toy_demo" / "demo.json"


def write_comparison(real_strip, ours_strip, path, zoom=2):
    """The real clip's frames above the demo's, side by side, enlarged ``zoom`` times (nearest) to be looked at."""
    real, ours = iio.imread(real_strip)[..., :3], iio.imread(ours_strip)[..., :3]
    if real.shape != ours.shape:
        raise ValueError(f"the real frames '{real_strip}' are {real.shape}, the demo's {ours.shape}: rebuild the demo "
                         "assets (svd_tools.make_demo_assets) for this model's frame count and size")
    both = np.concatenate([real, ours], axis=0)
    iio.imwrite(path, both.repeat(zoom, axis=0).repeat(zoom, axis=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", nargs="+", default=["outputs/demo.mp4", "outputs/demo.gif"])
    p.add_argument("--comparison", help="also write a PNG with the real clip's frames above the demo's")
    args = p.parse_args(argv)
    demo = json.loads(DEMO.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        strip = Path(scratch) / "demo.png"
        outputs = [*args.output, str(strip)] if args.comparison else args.output
        image_to_video.main(demo["arguments"] + ["--overwrite", "--output", *outputs])
        if args.comparison:
            write_comparison(ROOT / demo["real_frames"], strip, args.comparison)
            print(f"wrote {args.comparison}")


if __name__ == "__main__":
    run_cli(main)
