"""MindSpore (graph and PyNative) against the diffusers reference on the same tiny SVD config.

    python -m bench.run            # writes bench/results.md and prints it

Each (framework, task) runs in a fresh process; timings are medians of 5 calls after one
warm-up/compile call, on whatever CPU runs this. Ratios are taken within the same run.
"""
import json
import subprocess
import sys
from pathlib import Path

from bench.tasks import FRAMES, HEIGHT, REPEATS, WIDTH

FRAMEWORKS = ("torch", "mindspore-graph", "mindspore-pynative")
TASKS = {"unet": "UNet step (CFG batch 2x%d frames)" % FRAMES, "decode": "VAE decode (%d frames)" % FRAMES,
         "train": "train step (UNet fwd+bwd+AdamW, temporal params)"}


def measure(framework, task):
    out = subprocess.run([sys.executable, "-m", "bench.tasks", framework, task], check=True, capture_output=True,
                         text=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    results = {(f, t): measure(f, t) for t in TASKS for f in FRAMEWORKS}
    lines = [f"Tiny SVD config, {HEIGHT}x{WIDTH} frames, fp32, CPU; median of {REPEATS} calls after a warm-up call.",
             "", "| task | torch (diffusers) s | MindSpore graph s (ratio) | MindSpore PyNative s (ratio) | "
             "graph compile s | peak MiB torch / graph / PyNative |", "|---|---|---|---|---|---|"]
    for task, label in TASKS.items():
        ref = results[("torch", task)]
        graph, eager = results[("mindspore-graph", task)], results[("mindspore-pynative", task)]
        lines.append(f"| {label} | {ref['median_s']:.3f} | {graph['median_s']:.3f} "
                     f"({graph['median_s'] / ref['median_s']:.2f}x) | {eager['median_s']:.3f} "
                     f"({eager['median_s'] / ref['median_s']:.2f}x) | {graph['first_s']:.0f} | "
                     f"{ref['peak_mib']:.0f} / {graph['peak_mib']:.0f} / {eager['peak_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).resolve().parent / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
