"""LoRA on the tiny model: unmerged equals merged, training touches only the adapters, files and errors."""
import json
from pathlib import Path

import imageio.v3 as iio
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

import image_to_video
import train
from svd.io.checkpoint import CheckpointError, save_tensors
from svd.io.config import build_model
from svd.models.attention import Attention, scaled_dot_product_attention
from svd.models.lora import (DEFAULT_TARGETS, add_lora, attention_projections, load_lora, parse_lora_spec,
                             projection_layer, save_lora, select_targets)
from svd.runtime import set_mode
from svd_tools.convert import convert

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["runtime.mode=pynative", "data.num_frames=2", "data.width=64", "data.frame_stride=2",
         "optimizer.warmup_steps=1", "optimizer.lr=1e-3", "optimizer.end_lr=1e-3", "train.trainable=lora",
         "train.steps=3", "checkpoint.every=1"]


def unet_output(model):
    """The UNet's output on fixed inputs: one 2-frame video at 64x64 pixels (8x8 latents)."""
    rng = np.random.default_rng(7)
    inputs = (rng.standard_normal((2, 8, 8, 8)), rng.standard_normal(2), rng.standard_normal((2, 1, 64)),
              rng.standard_normal((2, 96)), np.zeros((1, 2)))
    return model.unet(*[Tensor(x.astype(np.float32)) for x in inputs]).asnumpy()


def random_lora(model, path, seed, rank=2, alpha=4.0, targets=DEFAULT_TARGETS, up_scale=0.3):
    """A LoRA file with random down and up weights on ``targets``."""
    rng = np.random.default_rng(seed)
    projections = attention_projections(model)
    tensors = {}
    for name in select_targets(projections, targets):
        attention, proj = projections[name]
        out_dim, in_dim = projection_layer(attention, proj).weight.shape
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((rank, in_dim)) / np.sqrt(in_dim)
        tensors[f"{name}.lora_up.weight"] = up_scale * rng.standard_normal((out_dim, rank))
    save_lora(tensors, path, rank, alpha, targets)
    return path


@pytest.fixture(scope="module")
def base(tiny_cfg):
    """A seeded tiny model's UNet output (models are rebuilt per test: loading a LoRA changes them)."""
    return unet_output(build_model(tiny_cfg, seed=0))


def test_merged_equals_unmerged(tiny_cfg, base, tmp_path):
    shapes = build_model(tiny_cfg, lazy=True)
    loras = [(random_lora(shapes, tmp_path / "a.safetensors", 1), 0.7),
             (random_lora(shapes, tmp_path / "b.safetensors", 2, rank=3), -0.5)]
    unmerged, merged = build_model(tiny_cfg, seed=0), build_model(tiny_cfg, seed=0)
    for path, scale in loras:
        load_lora(unmerged, path, scale)
        load_lora(merged, path, scale, merge=True)
    a, b = unet_output(unmerged), unet_output(merged)
    assert np.abs(a - base).max() > 1e-2 * np.abs(base).max()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(base).max())
    assert not any(".lora." in p.name for p in merged.get_parameters())
    names = {p.name for p in unmerged.get_parameters()}
    assert {p.name for p in merged.get_parameters()} <= names  # the adapted layers keep their weights' names
    assert "unet.middle_block.1.time_stack.0.attn1.to_out.0.lora.1.up" in names


def test_zero_up_weights_leave_output_exact(tiny_cfg, base, tmp_path):
    model = build_model(tiny_cfg, seed=0)
    names = add_lora(model, rank=2, alpha=2.0)
    assert len(names) == 6 * len(select_targets(attention_projections(model), ["unet.*.time_stack.*.attn1.to_q"]))
    np.testing.assert_array_equal(unet_output(model), base)
    load_lora(model, random_lora(model, tmp_path / "zero.safetensors", 3, up_scale=0.0))
    np.testing.assert_array_equal(unet_output(model), base)


def test_cross_attention_query_and_key_get_zero_gradient():
    """One key: the softmax is exactly 1 whatever q and k are, so their gradient is exactly 0."""
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal(shape).astype(np.float32)) for shape in ((2, 5, 32), (2, 1, 32), (2, 1, 32)))
    weights = Tensor(rng.standard_normal((2, 5, 32)).astype(np.float32))
    dq, dk, dv = ms.grad(lambda q, k, v: (scaled_dot_product_attention(q, k, v, 2) * weights).sum(),
                         grad_position=(0, 1, 2))(q, k, v)
    assert not dq.asnumpy().any() and not dk.asnumpy().any() and dv.asnumpy().any()
    attention = Attention(32, 2, 16, context_dim=48)
    x, context = Tensor(rng.standard_normal((2, 5, 32)).astype(np.float32)), Tensor(np.ones((2, 1, 48), np.float32))
    params = [attention.to_q.weight, attention.to_k.weight, attention.to_v.weight]
    grads = ops.GradOperation(get_by_list=True)(lambda x, c: (attention(x, c) * weights).sum(), params)(x, context)
    assert [bool(g.asnumpy().any()) for g in grads] == [False, False, True]


def test_targeting_cross_attention_query_warns(tiny_cfg):
    model = build_model(tiny_cfg, lazy=True)
    with pytest.warns(UserWarning, match="cross-attention to_q/to_k layers .*zero gradient"):
        add_lora(model, 2, 2.0, ["unet.*.time_stack.*.attn2.to_[qk]"])
    with pytest.raises(ValueError, match="lora target 'unet.*.attn3.to_q' matches no attention projection"):
        add_lora(model, 2, 2.0, ["unet.*.attn3.to_q"])


def test_unmerged_lora_after_a_graph_compile_is_refused(tiny_cfg, tmp_path):
    """A compiled graph would not see new adapters: refused with a one-line error (merging still works)."""
    model = build_model(tiny_cfg, lazy=True)
    lora = random_lora(model, tmp_path / "a.safetensors", 6)
    model.unet.compile_cache.add("stand-in for a compiled graph")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        with pytest.raises(ValueError, match="unmerged LoRA must be added before the UNet's first call in graph"):
            load_lora(model, lora)
    finally:
        model.unet.compile_cache.clear()
        set_mode("pynative")


def test_file_errors_name_the_file_and_key(tiny_cfg, tmp_path):
    model = build_model(tiny_cfg, lazy=True)
    layer = "unet.middle_block.1.time_stack.0.attn1.to_q"
    width = attention_projections(model)[layer][0].to_q.weight.shape[1]

    def write(name, tensors, rank=2):
        save_lora({k: np.zeros(s, np.float32) for k, s in tensors.items()}, tmp_path / name, rank, 2.0, [])
        return tmp_path / name

    unknown = write("unknown.safetensors", {"unet.nope.to_q.lora_down.weight": (2, width),
                                            "unet.nope.to_q.lora_up.weight": (width, 2)})
    with pytest.raises(CheckpointError, match=r"unknown.safetensors: 1 LoRA targets are not attention projections "
                                              r"of this model, e.g. 'unet.nope.to_q'"):
        load_lora(model, unknown)
    rank = write("rank.safetensors", {f"{layer}.lora_down.weight": (3, width), f"{layer}.lora_up.weight": (width, 2)})
    with pytest.raises(CheckpointError, match=rf"rank.safetensors: key '{layer}.lora_down.weight' has shape "
                                              r"\(3, 64\), not rank 2"):
        load_lora(model, rank)
    shape = write("shape.safetensors", {f"{layer}.lora_down.weight": (2, width + 1),
                                        f"{layer}.lora_up.weight": (width, 2)})
    with pytest.raises(CheckpointError, match=rf"shape.safetensors: key '{layer}.lora_down.weight' has shape "
                                              r"\(2, 65\), the layer takes 64 inputs"):
        load_lora(model, shape)
    half = write("half.safetensors", {f"{layer}.lora_down.weight": (2, width)})
    with pytest.raises(CheckpointError, match=rf"'{layer}.lora_up.weight' is missing"):
        load_lora(model, half)
    save_file({"w": np.zeros(2, np.float32)}, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="not a LoRA file of this project"):
        load_lora(model, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="LoRA scale for '.*shape.safetensors' must be a finite number, got nan"):
        load_lora(model, shape, float("nan"))
    with pytest.raises(ValueError, match="--lora 'x.safetensors:big': scale 'big' is not a number"):
        parse_lora_spec("x.safetensors:big")
    assert parse_lora_spec("x.safetensors:-0.5") == ("x.safetensors", -0.5)
    assert parse_lora_spec("x.safetensors") == ("x.safetensors", 1.0)


def train_lora(clips_csv, out, *overrides, weights=("--random-weights",), resume=None):
    argv = ["--config", str(ROOT / "configs" / "train_tiny.yaml"), *weights]
    argv += ["--resume", resume] if resume else []
    train.main(argv + [f"data.csv={clips_csv}", f"checkpoint.dir={out}", *TRAIN, *overrides])
    return out / "lora.safetensors"


@pytest.fixture(scope="module")
def trained(clips_csv, tmp_path_factory):
    """Three PyNative steps of LoRA training from seeded random weights (train.seed 42)."""
    out = tmp_path_factory.mktemp("lora")
    return out, train_lora(clips_csv, out)


def test_training_saves_only_the_lora_and_changes_nothing_else(trained, tiny_cfg):
    out, path = trained
    assert not (out / "final.safetensors").exists()
    seeded = build_model(tiny_cfg, seed=42)
    targets = select_targets(attention_projections(seeded), DEFAULT_TARGETS)
    tensors = load_file(str(path))
    assert sorted(tensors) == sorted(f"{t}.lora_{half}.weight" for t in targets for half in ("down", "up"))
    assert all(tensors[f"{t}.lora_up.weight"].any() for t in targets)
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata()
    assert (metadata["rank"], metadata["alpha"], json.loads(metadata["targets"])) == ("4", "4.0", list(DEFAULT_TARGETS))
    # A random-weight run stores the whole model in its step checkpoints: every base weight is bit-identical.
    state = ms.load_checkpoint(str(out / "step_00000003.ckpt"))
    for param in seeded.get_parameters():
        np.testing.assert_array_equal(state[param.name].asnumpy(), param.asnumpy(), err_msg=param.name)
    base = unet_output(seeded)
    load_lora(seeded, path, 0.0)
    np.testing.assert_array_equal(unet_output(seeded), base)
    load_lora(seeded, path, 1.0)
    assert np.abs(unet_output(seeded) - base).max() > 0


def test_lora_resumes_from_a_base_checkpoint(trained, clips_csv, tiny_cfg, tmp_path):
    """From a base checkpoint the step checkpoints hold no base weight; resuming gives the straight run's LoRA."""
    seeded = build_model(tiny_cfg, seed=42)
    base_file = tmp_path / "base.safetensors"
    save_tensors({p.name: p.asnumpy() for p in seeded.get_parameters()}, base_file)
    out, weights = tmp_path / "run", ("--checkpoint", str(base_file))
    train_lora(clips_csv, out, weights=weights)
    saved = set(ms.load_checkpoint(str(out / "step_00000003.ckpt")))
    assert not saved & {p.name for p in seeded.get_parameters()}
    assert any(".lora.0.up" in name for name in saved)
    for later in ("step_00000003.ckpt", "lora.safetensors"):
        (out / later).unlink()
    resumed = load_file(str(train_lora(clips_csv, out, weights=weights, resume="auto")))
    straight = load_file(str(trained[1]))
    for key in straight:
        np.testing.assert_array_equal(resumed[key], straight[key], err_msg=key)


def test_lora_section_is_required(clips_csv, tmp_path):
    config = tmp_path / "no_lora.yaml"
    config.write_text("\n".join(line for line in (ROOT / "configs" / "train_tiny.yaml").read_text().splitlines()
                                if not line.startswith(("lora:", "  rank:", "  alpha:", "  targets:", "    - "))))
    with pytest.raises(ValueError, match="train.trainable: lora needs a 'lora' section"):
        train.main(["--config", str(config), "--random-weights", f"data.csv={clips_csv}",
                    f"checkpoint.dir={tmp_path / 'out'}", *TRAIN])


def test_image_to_video_with_lora_merged_or_not(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    lora = random_lora(build_model(tiny_cfg, lazy=True), tmp_path / "a.safetensors", 4)
    args = ["--config", "svd_tiny", "--random-weights", "--image", "assets/demo.png", "--num-steps", "1",
            "--num-frames", "2", "--width", "64", "--resize", "stretch", "--no-progress"]
    image_to_video.main(args + ["--lora", f"{lora}:0.5", "--output", str(tmp_path / "unmerged")])
    image_to_video.main(args + ["--lora", f"{lora}:0.5", "--merge-lora", "--output", str(tmp_path / "merged")])
    for name in ("frame_0000.png", "frame_0001.png"):
        unmerged = iio.imread(tmp_path / "unmerged" / name).astype(int)
        assert np.abs(unmerged - iio.imread(tmp_path / "merged" / name)).max() <= 1  # 8-bit rounding
    with pytest.raises(ValueError, match="scale 'x' is not a number"):
        image_to_video.main(args + ["--lora", f"{lora}:x"])
    with pytest.raises(ValueError, match="--merge-lora needs at least one --lora"):
        image_to_video.main(args + ["--merge-lora"])


def test_convert_merges_lora(tiny_cfg, tmp_path):
    seeded = build_model(tiny_cfg, seed=0)
    state = {p.name: p.asnumpy() for p in seeded.get_parameters()}
    save_tensors(state, tmp_path / "base.safetensors")
    lora = random_lora(seeded, tmp_path / "a.safetensors", 5)
    convert("svd_tiny", tmp_path / "base.safetensors", tmp_path / "merged.safetensors", loras=[(lora, 0.5)])
    merged = load_file(str(tmp_path / "merged.safetensors"))
    load_lora(seeded, lora, 0.5, merge=True)
    expected = {p.name: p.asnumpy() for p in seeded.get_parameters()}
    changed = {k for k in state if not np.array_equal(state[k], merged[k])}
    assert changed == {f"{t}.weight" for t in select_targets(attention_projections(seeded), DEFAULT_TARGETS)}
    for key in changed:
        np.testing.assert_array_equal(merged[key], expected[key], err_msg=key)
    with pytest.raises(ValueError, match="LoRA scale for .* must be a finite number, got inf"):
        convert("svd_tiny", tmp_path / "base.safetensors", tmp_path / "x.safetensors", loras=[(lora, float("inf"))])
