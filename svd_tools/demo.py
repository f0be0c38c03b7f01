"""`make demo`: the shipped toy model animates a held-out real photo (never trained on), offline.

The arguments live in assets/toy_demo/demo.json, which tests/test_toy_model.py runs too, so the demo and
its test cannot drift apart.

    python -m svd_tools.demo [--output outputs/demo.mp4 outputs/demo.gif]
"""
import argparse
import json
from pathlib import Path

import image_to_video
from svd.cli import run_cli

DEMO = Path(__file__).resolve().parents[1] / "assets" / "toy_demo" / "demo.json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", nargs="+", default=["outputs/demo.mp4", "outputs/demo.gif"])
    args = p.parse_args(argv)
    image_to_video.main(json.loads(DEMO.read_text())["arguments"] + ["--overwrite", "--output", *args.output])


if __name__ == "__main__":
    run_cli(main)
