"""One benchmark task in one framework, run in its own process so peak memory is its own.

    python -m bench.tasks {mindspore-graph|mindspore-pynative|torch} {unet|decode|train}

Prints one JSON line: median seconds per call, first-call (compile) seconds, peak RSS in MiB.
"""
import json
import resource
import sys
import time

import numpy as np

FRAMES, HEIGHT, WIDTH, REPEATS = 6, 128, 256, 5


def timed(call, repeats=REPEATS):
    """(median seconds of ``repeats`` calls after a warm-up call, warm-up seconds); the warm-up alone if 0."""
    start = time.perf_counter()
    call()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return (float(np.median(times)) if times else first), first


def inputs(model_cfg):
    rng = np.random.default_rng(0)
    t, h, w = FRAMES, HEIGHT // 8, WIDTH // 8
    unet = model_cfg["unet"]
    return dict(x=rng.standard_normal((2, t, unet["in_channels"], h, w)).astype(np.float32),
                c_noise=np.array([0.5, 0.5], np.float32),
                context=rng.standard_normal((2, 1, unet["context_dim"])).astype(np.float32),
                added=np.array([[6, 127, 0.02]] * 2, np.float32),
                z=rng.standard_normal((t, 4, h, w)).astype(np.float32),
                target=rng.standard_normal((t, 4, h, w)).astype(np.float32))


def unet_call_inputs(model, data):
    """The guided UNet call's MindSpore inputs ``(b t, ...)`` from the per-video arrays of ``inputs``."""
    from mindspore import Tensor
    b, t = data["x"].shape[:2]
    return (Tensor(data["x"].reshape(b * t, *data["x"].shape[2:])), Tensor(np.repeat(data["c_noise"], t)),
            Tensor(np.repeat(data["context"], t, axis=0)),
            Tensor(np.repeat(model.vector(*data["added"].T).asnumpy(), t, axis=0)),
            Tensor(np.zeros((b, t), np.float32)))


def run_mindspore(task, graph, model_cfg, data):
    import svd  # noqa: F401
    from mindspore import Tensor, nn, ops
    from svd.io.config import build_model, load_config
    from svd.runtime import set_mode
    from svd.training.step import select_trainable
    set_mode("graph" if graph else "pynative")
    model = build_model(load_config("svd_tiny"))
    t = FRAMES
    x, c_noise, context, vector, indicator = unet_call_inputs(model, data)
    if task == "unet":
        return timed(lambda: model.unet(x, c_noise, context, vector, indicator).asnumpy())
    if task == "decode":
        z = Tensor(data["z"])
        return timed(lambda: model.vae.decoder(z, t).asnumpy())
    trainable = select_trainable(model)
    optimizer = nn.AdamWeightDecay(trainable, learning_rate=1e-4)
    target = Tensor(data["target"])

    class Step(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.unet, self.optimizer = model.unet, optimizer
            self.grad = ops.value_and_grad(self.loss, None, optimizer.parameters)

        def loss(self, *args):
            return ops.square(self.unet(*args)[:t] - target).mean()

        def construct(self, *args):
            loss, grads = self.grad(*args)
            return ops.depend(loss, self.optimizer(grads))

    step = Step()
    return timed(lambda: step(x, c_noise, context, vector, indicator).asnumpy())


def run_torch(task, model_cfg, data):
    import torch
    from tests.reference import build_reference
    unet, vae, _ = build_reference(model_cfg)
    t = FRAMES
    x, c_noise = torch.from_numpy(data["x"]), torch.from_numpy(data["c_noise"])
    context, added = torch.from_numpy(data["context"]), torch.from_numpy(data["added"])
    if task == "unet":
        with torch.no_grad():
            return timed(lambda: unet(x, c_noise, context, added).sample.numpy())
    if task == "decode":
        z = torch.from_numpy(data["z"])
        with torch.no_grad():
            return timed(lambda: vae.decode(z, num_frames=t).sample.numpy())
    names = ("temporal_res_block", "time_mixer", "temporal_transformer_blocks", "time_pos_embed")
    params = [p for n, p in unet.named_parameters() if any(k in n for k in names)]
    for p in unet.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    target = torch.from_numpy(data["target"])

    def step():
        optimizer.zero_grad()
        loss = torch.square(unet(x, c_noise, context, added).sample[0] - target).mean()
        loss.backward()
        optimizer.step()
        return loss.item()
    return timed(step)


def main():
    framework, task = sys.argv[1], sys.argv[2]
    from omegaconf import OmegaConf
    from svd.io.config import load_config
    model_cfg = OmegaConf.to_container(load_config("svd_tiny").model, resolve=True)
    data = inputs(model_cfg)
    if framework == "torch":
        median, first = run_torch(task, model_cfg, data)
    else:
        median, first = run_mindspore(task, framework == "mindspore-graph", model_cfg, data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"framework": framework, "task": task, "median_s": median, "first_s": first, "peak_mib": peak}))


if __name__ == "__main__":
    main()
