"""Full-size SVD / SVD-XT: MindSpore (PyNative, and graph mode for the UNet, CPU) against diffusers (torch 2.13 CPU),
same weights and inputs.

    python -m bench.full            # every row, about 45-60 minutes on 2 cores; writes bench/results_full.md
    python -m bench.full unet-320   # only the rows whose key starts with this

Weights: seeded random full-size SVD written once to bench/.weights (bench.full_weights, ~9 GB).
Each (row, framework) runs in a fresh process; ratios are taken within the run. Full-size
calls are slow, so a timed row is one warm-up call plus REPEATS timed calls (the median).
Results go to bench/results_full.json as they arrive (a rerun skips rows already there).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results_full.json"
REPEATS = 1
# key: (label, task, config, height, width, frames, decode chunk, frameworks, repeats)
ROWS = {
    "gemm": ("GEMM 4096^3 fp32", "gemm", "svd", 0, 0, 0, 0, ("torch", "mindspore"), 3),
    "unet-320x576x4": ("UNet call with guidance, 320x576, 4 frames", "unet", "svd", 320, 576, 4, 0,
                       ("torch", "mindspore", "mindspore-graph"), REPEATS),
    "unet-576x1024x2": ("UNet call with guidance, 576x1024, 2 frames", "unet", "svd", 576, 1024, 2, 0,
                        ("torch", "mindspore", "mindspore-graph"), REPEATS),
    "decode-576x1024x4": ("VAE decode, 576x1024, 4 frames", "decode", "svd", 576, 1024, 4, 4,
                          ("torch", "mindspore"), REPEATS),
    "clip": ("CLIP image embedding (224x224, ViT-H/14)", "clip", "svd", 224, 224, 1, 0, ("torch", "mindspore"), 3),
    "xt-unet-576x1024x2": ("SVD-XT guided UNet, 576x1024, 2 frames, halves in turn (peak)", "unet-split", "svd_xt",
                           576, 1024, 2, 0, ("mindspore",), 0),
    "xt-unet-576x1024x4": ("SVD-XT guided UNet, 576x1024, 4 frames, halves in turn (peak)", "unet-split", "svd_xt",
                           576, 1024, 4, 0, ("mindspore",), 0),
    "xt-unet-576x1024x8": ("SVD-XT guided UNet, 576x1024, 8 frames, halves in turn (peak)", "unet-split", "svd_xt",
                           576, 1024, 8, 0, ("mindspore",), 0),
    "xt-decode-576x1024x25": ("SVD-XT VAE decode, 576x1024, 25 frames, chunk 8", "decode", "svd_xt", 576, 1024, 25,
                              8, ("mindspore",), 0),
}
GIB = 1024.0


def measure(key, framework):
    label, task, config, height, width, frames, chunk, _, repeats = ROWS[key]
    cmd = [sys.executable, "-m", "bench.full_tasks", framework, task, config] + \
          [str(v) for v in (height, width, frames, chunk, repeats)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        return {"error": (out.stderr.strip().splitlines() or ["exit %d" % out.returncode])[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_fit(results):
    """Linear fit of the guided UNet's peak RSS over 2, 4, 8 frames at 576x1024 (guidance's halves in turn, as the
    pipeline runs 25 frames there), and its 25-frame prediction."""
    points = [(f, results.get(f"xt-unet-576x1024x{f}/mindspore")) for f in (2, 4, 8)]
    points = [(f, r["peak_mib"]) for f, r in points if r and "peak_mib" in r]
    if len(points) < 2:
        return None
    slope, intercept = np.polyfit([p[0] for p in points], [p[1] for p in points], 1)
    return slope, intercept, slope * 25 + intercept


def report(results):
    gemm = {fw: results.get(f"gemm/{fw}", {}).get("gflops") for fw in ("torch", "mindspore")}
    lines = ["Full-size SVD, fp32, CPU (2 cores), MindSpore PyNative (and graph mode for the UNet) vs diffusers; "
             "each cell one fresh process.",
             f"Machine GEMM (4096^3 fp32): torch {gemm['torch'] or 0:.0f} GFLOP/s, "
             f"MindSpore {gemm['mindspore'] or 0:.0f} GFLOP/s.", "",
             "| task | torch s | MindSpore s (ratio) | MindSpore graph s (ratio, compile s) "
             "| peak GiB torch / MindSpore / graph | UNet GFLOP/s torch / MindSpore / graph |",
             "|---|---|---|---|---|---|"]
    for key, (label, *_rest) in ROWS.items():
        if key == "gemm" or key.startswith("xt-"):
            continue
        ref, ours = results.get(f"{key}/torch", {}), results.get(f"{key}/mindspore", {})
        graph = results.get(f"{key}/mindspore-graph", {})
        if "median_s" not in ref or "median_s" not in ours:
            lines.append(f"| {label} | {ref.get('error', '-')} | {ours.get('error', '-')} | | | |")
            continue
        flops = ref.get("flops")
        timed = [ours] + ([graph] if "median_s" in graph else [])
        rate = " / ".join([f"{flops / ref['median_s'] / 1e9:.0f}"] +
                          [f"{flops / r['median_s'] / 1e9:.0f}" for r in timed]) if flops else ""
        graph_cell = graph.get("error", "-")
        if "median_s" in graph:
            graph_cell = (f"{graph['median_s']:.1f} ({graph['median_s'] / ref['median_s']:.2f}x, "
                          f"{graph['first_s'] - graph['median_s']:.0f})")
        peaks = " / ".join(f"{r['peak_mib'] / GIB:.2f}" for r in [ref] + timed)
        lines.append(f"| {label} | {ref['median_s']:.1f} | {ours['median_s']:.1f} "
                     f"({ours['median_s'] / ref['median_s']:.2f}x) | {graph_cell} | {peaks} | {rate} |")
    lines += ["", "MindSpore only, SVD-XT at 576x1024:", "", "| task | s | peak GiB |", "|---|---|---|"]
    for key in ("xt-unet-576x1024x2", "xt-unet-576x1024x4", "xt-unet-576x1024x8", "xt-decode-576x1024x25"):
        r = results.get(f"{key}/mindspore", {})
        label = ROWS[key][0]
        lines.append(f"| {label} | {r.get('first_s', 0):.0f} | {r['peak_mib'] / GIB:.2f} |" if "peak_mib" in r
                     else f"| {label} | {r.get('error', 'not run')} | |")
    fit = peak_fit(results)
    if fit:
        slope, intercept, predicted = fit
        lines += ["", f"Peak RSS of the guided UNet call ~ {intercept / GIB:.2f} GiB + {slope / GIB:.3f} GiB per frame;"
                      f" predicted for 25 frames: {predicted / GIB:.2f} GiB (UNet weights included)."]
    return "\n".join(lines) + "\n"


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    subprocess.run([sys.executable, "-m", "bench.full_weights", str(ROOT / "bench" / ".weights" / "svd")],
                   check=True, cwd=ROOT)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for key, row in ROWS.items():
        if not key.startswith(only):
            continue
        for framework in row[7]:
            name = f"{key}/{framework}"
            if name in results and "error" not in results[name]:
                continue
            results[name] = measure(key, framework)
            print(name, json.dumps(results[name]), flush=True)
            RESULTS.write_text(json.dumps(results, indent=1))
    text = report(results)
    (ROOT / "bench" / "results_full.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
