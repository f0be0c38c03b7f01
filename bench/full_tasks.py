"""One full-size benchmark task in one framework and a fresh process (its peak RSS is its own).

    python -m bench.full_tasks {mindspore|mindspore-graph|torch} {unet|unet-split|decode|clip|gemm} CONFIG HEIGHT WIDTH FRAMES CHUNK REPEATS

``mindspore-graph`` compiles the UNet (first call: compilation included); the other tasks run PyNative.

Prints one JSON line: first-call and median seconds, peak RSS in MiB (and GFLOP/s for gemm).
Weights come from bench.full_weights (diffusers layout); inputs from a fixed seed.
"""
import json
import resource
import sys
from pathlib import Path

import numpy as np

from bench.tasks import timed, unet_call_inputs

WEIGHTS = Path(__file__).resolve().parent / ".weights" / "svd"
FLOPS = []


def inputs(task, height, width, frames):
    rng = np.random.default_rng(0)
    h, w = height // 8, width // 8
    if task == "unet":
        return dict(x=rng.standard_normal((2, frames, 8, h, w)).astype(np.float32),
                    c_noise=np.array([0.4, 0.4], np.float32),
                    context=rng.standard_normal((2, 1, 1024)).astype(np.float32),
                    added=np.array([[6, 127, 0.02]] * 2, np.float32))
    if task == "decode":
        return dict(z=rng.standard_normal((frames, 4, h, w)).astype(np.float32))
    return dict(pixels=rng.standard_normal((1, 3, 224, 224)).astype(np.float32))


def run_mindspore(task, config, height, width, frames, chunk, repeats, graph=False):
    import svd  # noqa: F401
    from mindspore import Tensor, ops
    from svd.io.checkpoint import load_weights
    from svd.io.config import build_model, load_config
    from svd.runtime import set_mode
    set_mode("graph" if graph else "pynative")
    if task == "gemm":
        a = Tensor(np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32))
        return timed(lambda: ops.matmul(a, a).asnumpy(), repeats)
    cfg = load_config(config)
    model = build_model(cfg, lazy=True)
    network = "unet" if task == "unet-split" else task  # the split call runs the same network on the same inputs
    load_weights(model, WEIGHTS, cfg.model, prefixes=({"unet": "unet.", "decode": "vae.decoder.",
                                                        "clip": "image_encoder."}[network],))
    data = inputs(network, height, width, frames)
    if task == "unet":
        args = unet_call_inputs(model, data)
        return timed(lambda: model.unet(*args).asnumpy(), repeats)
    if task == "unet-split":  # guidance's two halves one after the other, as the pipeline's split_guidance
        args = unet_call_inputs(model, data)
        halves = [tuple(a[i * frames:(i + 1) * frames] for a in args[:4]) + (args[4][i:i + 1],) for i in range(2)]
        return timed(lambda: [model.unet(*half).asnumpy() for half in halves], repeats)
    if task == "decode":
        latents = Tensor(data["z"] * model.scale_factor)  # model.decode divides by it: the pipeline's path
        return timed(lambda: [model.decode(latents[s:s + chunk]).asnumpy() for s in range(0, frames, chunk)],
                     repeats)
    pixels = Tensor(data["pixels"])
    return timed(lambda: model.image_encoder(pixels).asnumpy(), repeats)


def run_torch(task, config, height, width, frames, chunk, repeats):
    import torch
    from safetensors.torch import load_file
    from tests.reference import published_modules
    from svd.io.checkpoint import DIFFUSERS_FILES
    if task == "gemm":
        a = torch.from_numpy(np.random.default_rng(0).standard_normal((4096, 4096)).astype(np.float32))
        return timed(lambda: (a @ a).numpy(), repeats)
    folder = {"unet": "unet", "decode": "vae", "clip": "image_encoder"}[task]
    module = published_modules()[folder]
    missing, unexpected = module.load_state_dict(load_file(str(WEIGHTS / folder / DIFFUSERS_FILES[folder])),
                                                 strict=False, assign=True)
    if unexpected or any(not k.endswith("position_ids") for k in missing):
        raise RuntimeError(f"weights do not fit the reference {folder}: {missing[:3]} {unexpected[:3]}")
    module.eval()
    data = {k: torch.from_numpy(v) for k, v in inputs(task, height, width, frames).items()}
    with torch.no_grad():
        if task == "unet":
            call = lambda: module(data["x"], data["c_noise"], data["context"], data["added"]).sample.numpy()
            from torch.utils.flop_counter import FlopCounterMode
            with FlopCounterMode(display=False) as counter:  # the warm-up call also counts the FLOPs
                call()
            FLOPS.append(counter.get_total_flops())
            return timed(call, repeats)
        if task == "decode":
            return timed(lambda: [module.decode(data["z"][s:s + chunk], num_frames=data["z"][s:s + chunk].shape[0])
                                  .sample.numpy() for s in range(0, frames, chunk)], repeats)
        return timed(lambda: module(data["pixels"]).image_embeds.numpy(), repeats)


def main():
    framework, task, config = sys.argv[1:4]
    height, width, frames, chunk, repeats = map(int, sys.argv[4:9])
    if framework == "torch":
        median, first = run_torch(task, config, height, width, frames, chunk, repeats)
    else:
        median, first = run_mindspore(task, config, height, width, frames, chunk, repeats,
                                      graph=framework == "mindspore-graph")
    result = {"framework": framework, "task": task, "first_s": first, "median_s": median,
              "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if task == "gemm":
        result["gflops"] = 2 * 4096 ** 3 / median / 1e9
    if FLOPS:
        result["flops"] = FLOPS[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
