"""Long videos (issue 9): local temporal attention, the keyframe-interpolation model, interpolate / continue.

Random-weight models: svd_tiny where one or two UNet calls suffice, a narrower variant of it ("micro": one
UNet level less, a 2x VAE, 32x32 frames) where a run makes several calls.
"""
from pathlib import Path

import imageio.v3 as iio
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn
from omegaconf import OmegaConf
from safetensors.numpy import load_file

import image_to_video
import train
from svd.io.checkpoint import CheckpointError, convert_from_ours, save_diffusers_folder, save_tensors
from svd.io.config import build_model, load_config
from svd.io.pretrained import load_pretrained
from svd.models.attention import VideoTransformerBlock, band_blocks, check_window, local_attention
from svd.models.interpolation import (CONV_IN, interpolation_concat, interpolation_config, keyframe_count,
                                      keyframe_mask, load_model_weights, nearest_keyframe)
from svd.sampling.long_video import (LongVideoPipeline, continuation_chunks, continuation_seams, decode_windows,
                                     interpolation_plan, interpolation_windows, keyframe_guidance,
                                     load_interpolation_pipeline, seam_report, two_image_plan)
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions, to_model_range
from svd.training.step import TRAINABLE
from svd_tools import package_toy_model
from svd_tools.convert import cast_floats

ROOT = Path(__file__).resolve().parent.parent


def micro_config():
    """svd_tiny with one UNet level less, a 2x VAE and a 32-pixel CLIP input: a run of many calls stays fast."""
    cfg = load_config("svd_tiny")
    cfg.model.unet.channel_mult = [1, 2]
    cfg.model.unet.num_res_blocks = 1
    cfg.model.unet.attention_resolutions = [1, 2]
    cfg.model.vae.ch_mult = [1, 2]
    cfg.model.vae.num_res_blocks = 1
    cfg.model.image_encoder.image_size = 32
    cfg.model.image_encoder.patch_size = 16
    cfg.sampling.update({"num_frames": 6, "num_steps": 1, "height": 32, "width": 32, "decode_chunk_size": 4})
    return cfg


@pytest.fixture(scope="module")
def micro():
    cfg = micro_config()
    base = ImageToVideoPipeline(build_model(cfg, seed=1), SamplingOptions.from_config(cfg.sampling))
    icfg = interpolation_config(cfg, num_frames=9)
    interp = ImageToVideoPipeline(build_model(icfg, seed=2), SamplingOptions.from_config(icfg.sampling))
    return base, interp


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]


def record_calls(monkeypatch, model, sizes):
    """Count the frames of every UNet call (the guided batch holds each frame twice)."""
    denoise = model.denoise

    def counted(x, *args):
        sizes.append(x.shape[0] // 2)
        return denoise(x, *args)
    monkeypatch.setattr(model, "denoise", counted)


# ------------------------------------------------------------------ local temporal attention

def band_reference(q, k, v, heads, window):
    """float64 softmax attention with an explicit (T, T) band mask |i - j| <= window // 2."""
    b, t, inner = q.shape
    d = inner // heads
    split = lambda x: x.astype(np.float64).reshape(b, t, heads, d).transpose(0, 2, 1, 3)
    scores = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(d)
    i = np.arange(t)
    scores = np.where(np.abs(i[:, None] - i[None]) <= window // 2, scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ split(v)).transpose(0, 2, 1, 3).reshape(b, t, inner)


def test_local_attention_matches_the_band_mask_reference():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((3, 9, 8)).astype(np.float32) for _ in range(3))
    for window in (1, 3, 5, 7):
        out = local_attention(Tensor(q), Tensor(k), Tensor(v), 2, window).asnumpy()
        np.testing.assert_allclose(out, band_reference(q, k, v, 2, window), atol=2e-6, err_msg=f"window {window}")
        tight = local_attention(Tensor(q), Tensor(k), Tensor(v), 2, window, budget=1).asnumpy()  # batch split to 1
        np.testing.assert_allclose(tight, out, atol=1e-6)
    full = band_reference(q, k, v, 2, 17)
    np.testing.assert_allclose(local_attention(Tensor(q), Tensor(k), Tensor(v), 2, 17).asnumpy(), full, atol=2e-6)
    assert np.abs(band_reference(q, k, v, 2, 3) - full).max() > 1e-2


def test_band_blocks_bound_the_scores_by_the_window():
    for frames, window in ((9, 3), (17, 5), (65, 5), (4, 7)):
        half = window // 2
        blocks = band_blocks(frames, window)
        assert [q for q0, q1, _, _ in blocks for q in range(q0, q1)] == list(range(frames))
        for q0, q1, k0, k1 in blocks:
            assert k1 - k0 <= window + 2 * half  # keys per query bounded by the window, not by the length
            assert k0 == max(0, q0 - half) and k1 == min(frames, q1 - 1 + half + 1)


def test_window_values():
    assert check_window(None) is None and check_window(5) == 5
    for bad in (4, 0, -3, True, 2.0):
        with pytest.raises(ValueError, match="temporal_attention_window must be null .*or an odd number >= 1"):
            check_window(bad)
    cfg = load_config("svd_tiny")
    cfg.model.unet.temporal_attention_window = 4
    with pytest.raises(ValueError, match="odd number >= 1, got 4"):
        build_model(cfg, lazy=True)


class JitBlock(nn.Cell):
    def __init__(self, window):
        super().__init__()
        self.window = window

    @ms.jit
    def construct(self, q, k, v):
        return local_attention(q, k, v, 2, self.window)


def test_local_attention_compiles_in_graph_mode():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 7, 8)).astype(np.float32) for _ in range(3))
    out = JitBlock(3)(Tensor(q), Tensor(k), Tensor(v)).asnumpy()
    np.testing.assert_allclose(out, band_reference(q, k, v, 2, 3), atol=2e-6)


def test_unet_window_covering_all_frames_is_full_attention():
    cfg = load_config("svd_tiny")
    full = build_model(cfg, seed=5)
    cfg.model.unet.temporal_attention_window = 5
    local = build_model(cfg, seed=5)
    blocks = [cell for _, cell in local.unet.cells_and_names() if isinstance(cell, VideoTransformerBlock)]
    assert blocks and all(block.attn1.window == 5 and block.attn2.window is None for block in blocks)
    t = 3
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((t, 4, 8, 8)).astype(np.float32))
    concat = Tensor(rng.standard_normal((t, 4, 8, 8)).astype(np.float32))
    context = Tensor(rng.standard_normal((t, 1, 64)).astype(np.float32))
    vector = ms.ops.repeat_interleave(full.vector([6], [127], [0.02]), t, 0)
    args = (x, Tensor(np.full(t, 3.0, np.float32)), concat, context, vector, Tensor(np.zeros((1, t), np.float32)))
    reference = full.denoise(*args).asnumpy()
    np.testing.assert_allclose(local.denoise(*args).asnumpy(), reference, rtol=0, atol=1e-6)  # |i - j| <= 2: all
    for block in blocks:
        block.attn1.window = 3
    assert np.abs(local.denoise(*args).asnumpy() - reference).max() > 1e-3


# ------------------------------------------------------------------ the interpolation model

def test_keyframe_layout():
    assert nearest_keyframe(9) == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert keyframe_mask(9).tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    keys = np.arange(3, dtype=np.float32).reshape(3, 1, 1, 1) * np.ones((3, 2, 2, 2), np.float32)
    concat = interpolation_concat(keys, 9)
    assert concat.shape == (9, 3, 2, 2)
    assert concat[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2] and concat[:, 2, 0, 0].tolist() == \
        keyframe_mask(9).tolist()
    assert keyframe_count(17) == 5
    for bad in (4, 8, 1):
        with pytest.raises(ValueError, match=r"\(k - 1\) \* 4 \+ 1 frames with k >= 2 keyframes"):
            keyframe_count(bad)
    np.testing.assert_allclose(keyframe_guidance(9, 1.0, 3.0), [1, 2, 3, 2, 1, 2, 3, 2, 1])


def test_interpolation_model_from_base_weights_is_the_base_model(tiny_cfg, tmp_path):
    base = build_model(tiny_cfg, seed=2)
    state = {p.name: p.asnumpy() for p in base.get_parameters()}
    save_tensors(state, tmp_path / "base.safetensors")
    icfg = interpolation_config(tiny_cfg)
    assert icfg.sampling.num_frames == 5 and icfg.model.unet.interpolation
    interp = build_model(icfg, lazy=True)
    load_model_weights(interp, tmp_path / "base.safetensors", icfg.model)
    conv = interp.unet.input_blocks[0][0].weight.asnumpy()
    assert conv.shape[1] == 9 and not conv[:, 8].any()
    np.testing.assert_array_equal(conv[:, :8], state[CONV_IN])

    t = 2
    rng = np.random.default_rng(3)
    x = Tensor(rng.standard_normal((t, 4, 8, 8)).astype(np.float32))
    first = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    concat = np.repeat(first, t, axis=0)  # the first frame repeated, as SVD conditions
    context = Tensor(np.repeat(rng.standard_normal((1, 1, 64)).astype(np.float32), t, axis=0))
    vector = ms.ops.repeat_interleave(base.vector([6], [127], [0.02]), t, 0)
    sigma, indicator = Tensor(np.full(t, 2.0, np.float32)), Tensor(np.zeros((1, t), np.float32))
    expected = base.denoise(x, sigma, Tensor(concat), context, vector, indicator).asnumpy()
    neutral = np.concatenate([concat, np.zeros((t, 1, 8, 8), np.float32)], axis=1)
    got = interp.denoise(x, sigma, Tensor(neutral), context, vector, indicator).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)

    # Stability's and diffusers' layouts grow the same way; an interpolation checkpoint loads as it is.
    save_tensors(convert_from_ours(state, tiny_cfg.model, "stability"), tmp_path / "stability.safetensors")
    save_diffusers_folder(convert_from_ours(state, tiny_cfg.model, "diffusers"), tmp_path / "diffusers")
    for source in (tmp_path / "stability.safetensors", tmp_path / "diffusers"):
        other = build_model(icfg, lazy=True)
        load_model_weights(other, source, icfg.model)
        np.testing.assert_array_equal(other.unet.input_blocks[0][0].weight.asnumpy(), conv)
    save_tensors({p.name: p.asnumpy() for p in interp.get_parameters()}, tmp_path / "interp.safetensors")
    again = build_model(icfg, lazy=True)
    load_model_weights(again, tmp_path / "interp.safetensors", icfg.model)
    np.testing.assert_array_equal(again.unet.input_blocks[0][0].weight.asnumpy(), conv)
    state[CONV_IN] = np.zeros((32, 10, 3, 3), np.float32)
    save_tensors(state, tmp_path / "wrong.safetensors")
    with pytest.raises(CheckpointError, match="its UNet takes 10 input channels; this interpolation model takes 9"):
        load_model_weights(build_model(icfg, lazy=True), tmp_path / "wrong.safetensors", icfg.model)


# ------------------------------------------------------------------ plans

def test_frame_count_plans():
    assert interpolation_plan(65, 8) == (5, 2)
    assert interpolation_plan(65, 14) == (5, 2) and interpolation_plan(65, 25) == (17, 1)
    assert interpolation_plan(17, 14) == (5, 1) and interpolation_plan(13, 14) == (4, 1)
    assert interpolation_plan(65, 14, keyframes=2) == (2, 3) and interpolation_plan(33, 6, keyframes=3) == (3, 2)
    for frames in (64, 3, 18, 1, 0):
        with pytest.raises(ValueError, match=r"--num-frames must be 1 \+ \(k - 1\) \* 4\^L .*got " + str(frames)):
            interpolation_plan(frames, 14)
    with pytest.raises(ValueError, match=r"with 3 keyframes: 9, 33, 129, got 17"):
        interpolation_plan(17, 14, keyframes=3)
    with pytest.raises(ValueError, match="--keyframes must be in 2..6"):
        interpolation_plan(33, 6, keyframes=9)
    assert two_image_plan(5) == 1 and two_image_plan(65) == 3
    with pytest.raises(ValueError, match=r"with --last-image, --num-frames must be 1 \+ 4\^L .*got 9"):
        two_image_plan(9)
    assert interpolation_windows(9, 3) == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert interpolation_windows(6, 5) == [(0, 4), (4, 5)]
    assert continuation_chunks(14, 6, 2) == [0, 4, 8] and continuation_chunks(13, 6, 2) == [0, 4, 8]
    assert continuation_chunks(5, 6, 2) == [0] and continuation_seams(14, 6, 2) == [6, 10]
    with pytest.raises(ValueError, match=r"--overlap must be in 1..5"):
        continuation_chunks(14, 6, 6)


# ------------------------------------------------------------------ interpolate / continue

def test_interpolate_keeps_keyframes_and_windows_do_not_grow_with_length(micro, images, monkeypatch):
    base, interp = micro
    long = LongVideoPipeline(base, interp)
    assert (long.chunk_frames, long.window_frames) == (6, 9)
    sizes = {}
    for frames in (9, 33):
        calls, passes = [], []
        record_calls(monkeypatch, base.model, calls)
        record_calls(monkeypatch, interp.model, calls)
        run_pass = long.interpolation_pass

        def recorded(keys, *args, **kwargs):
            out = run_pass(keys, *args, **kwargs)
            passes.append((np.array(keys), out))
            return out
        monkeypatch.setattr(long, "interpolation_pass", recorded)
        latents = long.interpolate(images[0], frames, output_type="latent", progress=False, generator=4)
        monkeypatch.undo()
        assert latents.shape == (frames, 4, 16, 16)
        for keys, out in passes:
            np.testing.assert_array_equal(out[::4], keys)  # known positions keep their latents bit for bit
        np.testing.assert_array_equal(latents, passes[-1][1])
        np.testing.assert_array_equal(latents[::4 ** len(passes)], passes[0][0])  # the base model's keyframes
        sizes[frames] = calls
    assert sizes[9] == [3, 9] and sizes[33] == [3, 9, 9, 9, 9, 9]  # 3 keyframes; 1, then 1 + 4 windows
    assert max(sizes[33]) == max(sizes[9]) <= 9  # every UNet call within the trained window, whatever N


def test_pass_frame_rates(micro, images, monkeypatch):
    base, interp = micro
    long = LongVideoPipeline(base, interp)
    for pass_fps, expected in (("same", [7.0, 7.0]), ("scaled", [7.0 / 4, 7.0])):
        rates = []
        for model in (base.model, interp.model):
            vector = model.vector
            monkeypatch.setattr(model, "vector", lambda fps, *rest, v=vector: rates.append(float(fps[0]) + 1) or
                                v(fps, *rest))
        long.interpolate(images[0], 9, pass_fps=pass_fps, output_type="latent", progress=False)
        monkeypatch.undo()
        assert rates == pytest.approx(expected)  # the keyframes (base), then the one pass
    with pytest.raises(ValueError, match="pass_fps must be one of"):
        long.interpolate(images[0], 9, pass_fps="half", progress=False)


def test_last_image_gives_the_first_and_last_frames(micro, images, monkeypatch):
    base, interp = micro
    long = LongVideoPipeline(base, interp)
    calls = []
    record_calls(monkeypatch, base.model, calls)
    latents = long.interpolate(images[0], 5, last_image=images[1], output_type="latent", progress=False)
    assert calls == [] and latents.shape[0] == 5  # no keyframe from the base model: the two images are the keys
    model = base.model
    for image, got in ((images[0], latents[0]), (images[1], latents[-1])):
        pixels = Tensor(to_model_range(image / np.float32(255.0)))
        expected = model.scale_factor * model.condition_latent(pixels).asnumpy()[0]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    decoded = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda x: decoded.append(x.shape[0]) or decode(x))
    frames = decode_windows(model, latents, chunk=3, overlap=1)
    assert frames.shape == (5, 32, 32, 3) and max(decoded) <= 3


class FrameWiseDecoder:
    """A stand-in VAE whose decode is frame-wise (channels 0-2 as pixels): windows must not change the result."""

    @staticmethod
    def decode(latents):
        return latents[:, :3] * 0.5


def test_decode_windows_blend_back_to_the_whole():
    latents = np.random.default_rng(5).uniform(-1, 1, (11, 4, 2, 3)).astype(np.float32)
    expected = np.clip((latents[:, :3] * 0.5 + 1) / 2, 0, 1).transpose(0, 2, 3, 1)
    for chunk, overlap in ((4, 2), (3, 1), (11, 2), (5, 0), (1, 2), (20, 3)):
        np.testing.assert_allclose(decode_windows(FrameWiseDecoder, latents, chunk, overlap), expected, atol=1e-6,
                                   err_msg=f"chunk {chunk}, overlap {overlap}")


def test_continue_carries_overlap_latents(micro, images, monkeypatch):
    base, _ = micro
    long = LongVideoPipeline(base)
    calls, chunks = [], []
    record_calls(monkeypatch, base.model, calls)
    sample = long._sample_fixed

    def recorded(pipe, conditions, options, noise, known, known_latents, *args):
        out = sample(pipe, conditions, options, noise, known, known_latents, *args)
        chunks.append((known, known_latents.copy(), out))
        return out
    monkeypatch.setattr(long, "_sample_fixed", recorded)
    latents = long.continue_video(images[0], 14, overlap=2, output_type="latent", progress=False)
    assert latents.shape[0] == 14 and calls == [6, 6, 6]
    starts = continuation_chunks(14, 6, 2)
    for j, (known, carried, out) in enumerate(chunks, start=1):
        assert known == [0, 1]
        np.testing.assert_array_equal(out[:2], carried)
        np.testing.assert_array_equal(latents[starts[j]:starts[j] + 2], carried)
    np.testing.assert_array_equal(chunks[1][1], chunks[0][2][-2:])  # chunk 3 starts from chunk 2's last latents
    frames = decode_windows(base.model, latents, chunk=4)
    report = seam_report(frames, continuation_seams(14, 6, 2))
    assert set(report) == {"seam", "inside", "ratio"} and all(np.isfinite(v) for v in report.values())


def test_seam_report_on_known_frames():
    frames = np.zeros((6, 2, 2, 3))
    frames[3:] = 0.5  # one jump, between frames 2 and 3
    frames[1] = 0.1
    report = seam_report(frames, [3])
    assert report["seam"] == pytest.approx(0.5) and report["inside"] == pytest.approx(0.05)


# ------------------------------------------------------------------ command line

@pytest.fixture()
def micro_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    path = tmp_path / "micro.yaml"
    OmegaConf.save(micro_config(), path)
    return path


def cli(micro_yaml, *extra):
    return image_to_video.main(["--config", str(micro_yaml), "--random-weights", "--image", "assets/demo.png",
                                "--resize", "stretch", "--no-progress", *extra])


def test_cli_long_video_errors(micro_yaml, tmp_path):
    out = ["--output", str(tmp_path / "v.gif")]
    with pytest.raises(ValueError, match=r"--num-frames must be 1 \+ \(k - 1\) \* 4\^L with k keyframes \(2..6"):
        cli(micro_yaml, "--long-video", "interpolate", "--num-frames", "10", *out)
    with pytest.raises(ValueError, match=r"with --last-image, --num-frames must be 1 \+ 4\^L"):
        cli(micro_yaml, "--long-video", "interpolate", "--num-frames", "9", "--last-image", "assets/demo.png", *out)
    with pytest.raises(ValueError, match="--overlap needs --long-video"):
        cli(micro_yaml, "--overlap", "3", *out)
    with pytest.raises(ValueError, match="--long-video continue needs --num-frames"):
        cli(micro_yaml, "--long-video", "continue", *out)
    with pytest.raises(ValueError, match="--last-image is not an option of --long-video continue"):
        cli(micro_yaml, "--long-video", "continue", "--num-frames", "9", "--last-image", "assets/demo.png", *out)
    with pytest.raises(FileNotFoundError, match="--interp-checkpoint '.*nope.safetensors' does not exist"):
        cli(micro_yaml, "--long-video", "interpolate", "--num-frames", "9", "--interp-checkpoint",
            str(tmp_path / "nope.safetensors"), *out)
    with pytest.raises(ValueError, match="--overlap must be in 1..5"):
        cli(micro_yaml, "--long-video", "continue", "--num-frames", "9", "--overlap", "6", *out)


def test_cli_long_videos(micro_yaml, tmp_path):
    cli(micro_yaml, "--long-video", "interpolate", "--num-frames", "9", "--output", str(tmp_path / "i.gif"))
    assert iio.imread(tmp_path / "i.gif").shape[:3] == (9, 32, 32)
    cli(micro_yaml, "--long-video", "continue", "--num-frames", "8", "--output", str(tmp_path / "c.gif"))
    assert iio.imread(tmp_path / "c.gif").shape[:3] == (8, 32, 32)


# ------------------------------------------------------------------ training

def test_interpolation_step_inputs(clips_csv):
    from svd.data import VideoClips
    from svd.training.step import interpolation_step_inputs

    clips = VideoClips(clips_csv, 9, 1, 32, 48)
    noise = {"p_mean": 1.0, "p_std": 1.6, "cond_aug_mean": -3.0, "cond_aug_std": 0.5}
    lengths = set()
    for step in range(6):
        frames, _, _, _, key_noise, sigma, eps, posterior, _ = interpolation_step_inputs(
            clips, step, 1, 0, 0, 1, noise, 4, 8, min_keyframes=2)
        t = frames.shape[1]
        lengths.add(t)
        assert key_noise.shape == (1, keyframe_count(t), 4, 4, 6)
        assert sigma.shape == (t,) and eps.shape == posterior.shape == (t, 4, 4, 6)
    assert lengths == {5, 9}
    fixed = interpolation_step_inputs(clips, 0, 1, 0, 0, 1, noise, 4, 8)
    assert fixed[0].shape[1] == 9 and fixed[4].shape[1] == 3


def test_toy_interp_recipe_trains_from_base_weights(clips_csv, tmp_path):
    """Stage 3 fine-tunes the packaged base (fp16) and ships as a delta over it that loads back exactly."""
    base = build_model(load_config("svd_toy"), seed=0)
    state = cast_floats({p.name: p.asnumpy() for p in base.get_parameters()}, "fp16")
    save_tensors(state, tmp_path / "base.safetensors")
    out = tmp_path / "interp"
    train.main(["--config", str(ROOT / "configs" / "toy_interp.yaml"), f"data.csv={clips_csv}",
                f"checkpoint.dir={out}", f"init.load.path={tmp_path / 'base.safetensors'}", "runtime.mode=pynative",
                "data.num_frames=5", "data.height=32", "data.width=48", "train.steps=2", "optimizer.warmup_steps=1",
                "checkpoint.every=1"])
    after = load_file(str(out / "final.safetensors"))
    for key in state:
        if key.startswith(("vae.", "image_encoder.")):
            np.testing.assert_array_equal(after[key], state[key], err_msg=key)
    conv = after[CONV_IN]
    assert conv.shape[1] == state[CONV_IN].shape[1] + 1
    assert np.abs(conv[:, -1]).max() > 0  # the mask channel, zero at the start, learns
    assert np.abs(conv[:, :-1] - state[CONV_IN]).max() < 1e-2  # two small steps from the base weights

    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "base.safetensors").rename(models / "base.safetensors")
    package_toy_model.main(["--interp", str(out / "final.safetensors"), "--base", str(models / "base.safetensors"),
                            "--output", str(models / "interp.safetensors")])
    delta = load_file(str(models / "interp.safetensors"))
    assert CONV_IN in delta and all(TRAINABLE["interpolation"](k) for k in delta)
    assert len(delta) < len(state) / 2
    pipe = load_interpolation_pipeline(load_config("svd_toy"), models / "interp.safetensors")
    for param in pipe.model.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), after[param.name].astype(np.float16).astype(np.float32),
                                      err_msg=param.name)
    _, cfg, model = load_pretrained(models / "interp.safetensors")
    assert cfg.model.unet.interpolation
    for param in model.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), after[param.name].astype(np.float16).astype(np.float32),
                                      err_msg=param.name)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (models / "interp.safetensors").rename(moved / "interp.safetensors")
    with pytest.raises(CheckpointError, match="differ from its base weights 'base.safetensors', which are not beside"):
        load_interpolation_pipeline(load_config("svd_toy"), moved / "interp.safetensors")
    after["unet.out.2.bias"] = after["unet.out.2.bias"] + 1.0  # a spatial layer: not what stage 3 trains
    save_tensors(after, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="'unet.out.2.bias' .*trained from another base"):
        package_toy_model.interpolation_delta(tmp_path / "other.safetensors", models / "base.safetensors")
