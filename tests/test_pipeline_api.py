"""The diffusers/mindone-style pipeline API on the tiny model: inputs, batches, randomness, outputs, loading."""
import json
import warnings

import numpy as np
import pytest
from mindspore import Tensor
from omegaconf import OmegaConf
from PIL import Image

import image_to_video
from svd.io.checkpoint import CheckpointError, convert_from_ours, save_diffusers_folder, save_tensors
from svd.io.config import build_model
from svd.io.media import load_image, read_image, rgb_images, to_uint8, unit_rgb
from svd.io.pretrained import choose_config, model_configs
from svd.models.resize import fit_image
from svd.sampling.diffusion import edm_sigmas
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions

H, W, T = 64, 64, 2


@pytest.fixture(scope="module")
def model(tiny_cfg):
    return build_model(tiny_cfg, seed=3)


@pytest.fixture(scope="module")
def pipe(model, tiny_cfg):
    defaults = SamplingOptions.from_config(tiny_cfg.sampling, num_frames=T, num_steps=1, height=H, width=W,
                                           decode_chunk_size=T)
    return ImageToVideoPipeline(model, defaults)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(2)]


def close(a, b):
    """Equal up to float rounding: MindSpore's CPU kernels are not bitwise reproducible from call to call, and a
    single Euler step from sigma 700 ends in ``x - (x - D)`` with ``x`` near 700 (one fp32 ulp there is 6e-5)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def run(pipe, image, **kwargs):
    kwargs.setdefault("output_type", "latent")
    return pipe(image, progress=False, **kwargs)


def test_every_input_kind_matches_the_array(pipe, images, tmp_path):
    array = images[0]
    Image.fromarray(array).save(tmp_path / "a.png")
    kinds = [array, Image.fromarray(array), str(tmp_path / "a.png"), tmp_path / "a.png",
             array.astype(np.float32) / 255.0, array.astype(np.uint16) * 257]
    out = run(pipe, kinds, generator=[5] * len(kinds))
    for video in out[1:]:
        close(video, out[0])
    close(run(pipe, array[None], generator=5), out[:1])


def test_resized_input_kinds_agree(tmp_path):
    big = np.random.default_rng(1).integers(0, 256, (70, 80, 3), dtype=np.uint8)
    pil, floats = rgb_images([Image.fromarray(big), big.astype(np.float64) / 255.0])
    for mode in ("cover", "stretch"):
        np.testing.assert_allclose(fit_image(pil, H, W, mode), fit_image(floats, H, W, mode), atol=1e-6)
    Image.fromarray(big).save(tmp_path / "big.png")
    np.testing.assert_array_equal(load_image(tmp_path / "big.png", H, W), to_uint8(fit_image(pil, H, W)))


def test_batch_equals_single_calls(pipe, images):
    batch = run(pipe, images, generator=[1, 2], output_type="np")
    assert batch.shape == (2, T, H, W, 3)
    for image, seed, video in zip(images, (1, 2), batch):
        close(run(pipe, image, generator=seed, output_type=None), video)
    shared = run(pipe, images, generator=np.random.default_rng(7))
    rng = np.random.default_rng(7)
    singles = [run(pipe, image, generator=rng)[0] for image in images]
    close(shared, np.stack(singles))


def test_num_videos_per_prompt(pipe, images):
    videos = run(pipe, images[0], num_videos_per_prompt=2, generator=4)
    assert videos.shape == (2, T, 4, H // 8, W // 8)
    assert np.abs(videos[0] - videos[1]).max() > 1e-3
    close(videos[0], run(pipe, images[0], generator=4)[0])


def test_generator_reproducibility(pipe, images):
    first = run(pipe, images[0], generator=11)
    close(first, run(pipe, images[0], generator=np.random.default_rng(11)))
    close(run(pipe, images[0]), run(pipe, images[0], generator=pipe.defaults.seed))
    assert np.abs(first - run(pipe, images[0], generator=12)).max() > 1e-3


def test_latents_pass_through(pipe, images):
    rng = np.random.default_rng(9)
    cond_noise = rng.standard_normal((1, 3, H, W)).astype(np.float32)
    latents = rng.standard_normal((T, 4, H // 8, W // 8)).astype(np.float32)
    drawn = run(pipe, images[0], generator=9)
    close(run(pipe, images[0], generator=9, latents=latents[None]), drawn)
    close(run(pipe, images[0], noise=latents, cond_noise=cond_noise, generator=0), drawn)


def test_output_types(pipe, images):
    frames = run(pipe, images[0], output_type="np")
    assert frames.shape == (1, T, H, W, 3) and frames.dtype == np.float32 and 0 <= frames.min() <= frames.max() <= 1
    pil = run(pipe, images[0], output_type="pil")
    assert len(pil) == 1 and len(pil[0]) == T and pil[0][0].size == (W, H)
    pixels = np.stack([np.asarray(f) for f in pil[0]]).astype(int)
    assert np.abs(pixels - to_uint8(frames[0])).max() <= 1
    latents = run(pipe, images[0], output_type="latent")
    close(pipe.decode(Tensor(latents[0]), pipe.defaults, progress=False), frames[0])
    legacy = ImageToVideoPipeline(pipe.model)(images[0], pipe.defaults, progress=False)
    close(legacy, frames[0])


def test_callback_on_step_end(pipe, images):
    calls = []

    def record(pipeline, step, sigma, tensors):
        calls.append((pipeline, step, sigma, tensors["video"], tuple(tensors["latents"].shape)))

    run(pipe, images[0], num_inference_steps=3, callback_on_step_end=record)
    sigmas = edm_sigmas(3)
    assert [(c[0], c[1], c[3], c[4]) for c in calls] == [(pipe, i, 0, (T, 4, H // 8, W // 8)) for i in range(3)]
    np.testing.assert_allclose([c[2] for c in calls], sigmas[:3], rtol=1e-6)

    def zero_last(pipeline, step, sigma, tensors):
        return {"latents": tensors["latents"] * 0} if step == 2 else None

    assert not run(pipe, images[0], num_steps=3, callback_on_step_end=zero_last).any()


def test_cover_and_stretch_policies(pipe):
    bands = np.repeat(np.array([0.0, 0.5, 1.0], np.float32), H)[None, :, None].repeat(H, 0).repeat(3, 2)
    with pytest.warns(UserWarning, match="removes 67%"):
        cover = fit_image(bands, H, W, "cover")
    np.testing.assert_allclose(cover[:, 8:-8], 0.5, atol=1e-5)
    stretch = fit_image(bands, H, W, "stretch")
    assert stretch[:, :16].max() < 0.05 and stretch[:, -16:].min() > 0.95
    np.testing.assert_allclose(stretch[:, 28:36], 0.5, atol=1e-2)
    wide = (bands * 255).astype(np.uint8)
    close(run(pipe, wide, resize_mode="stretch", generator=2),
                                  run(pipe, fit_image(unit_rgb(wide), H, W, "stretch"), generator=2))


def test_heavy_crop_warning_points_at_the_caller(pipe, tmp_path):
    wide = np.zeros((H, 4 * W, 3), np.uint8)
    with pytest.warns(UserWarning, match=r"image 64x256 -> 64x64: the centre crop removes 75%") as record:
        run(pipe, wide, generator=0)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit_image(np.zeros((H, 80, 3), np.float32), H, W)
        fit_image(np.zeros((H, 4 * W, 3), np.float32), H, W, "stretch")


def test_sixteen_bit_images(tmp_path):
    grey = np.array([[0, 65535, 30000]], np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    pixels = read_image(tmp_path / "g16.png")
    assert pixels.dtype == np.uint16 and pixels.shape == (1, 3, 3)
    np.testing.assert_allclose(unit_rgb(pixels)[0, :, 0], grey[0] / 65535.0, rtol=1e-6)


@pytest.mark.parametrize("image, kwargs, error, message", [
    (np.full((H, W, 3), 255.0, np.float32), {}, ValueError, r"image: float values must be in \[0, 1\], got 255..255"),
    (np.full((H, W, 3), -1.0), {}, ValueError, r"got -1..-1 .*\(x \+ 1\) / 2"),
    (np.full((H, W, 3), np.nan, np.float32), {}, ValueError, "NaN or infinite"),
    (np.zeros((H, W, 3), np.int64), {}, ValueError, "dtype int64 has no known value range"),
    (np.zeros((H, W, 4), np.uint8), {}, ValueError, r"H x W x 3 RGB array, got shape \(64, 64, 4\)$"),
    (np.zeros((3, H, W), np.uint8), {}, ValueError, r"got shape \(3, 64, 64\) \(channels first"),
    (np.zeros((H, W), np.uint8), {}, ValueError, r"got shape \(64, 64\)"),
    ([np.zeros((H, W, 3), np.uint8), 5], {}, ValueError, "image 1: expected a PIL image, a path or an H x W x 3 "
                                                          "array, got int"),
    ([], {}, ValueError, "image list is empty"),
    ("no/such.png", {}, FileNotFoundError, "image 'no/such.png' does not exist"),
    (Image.new("F", (W, H)), {}, ValueError, "PIL image mode 'F' has no fixed value range"),
    (None, {"generator": "7"}, ValueError, "generator must be an int seed or a numpy.random.Generator .* got str"),
    (None, {"generator": [1, 2]}, ValueError, "generator list has 2 entries for 1 images"),
    (None, {"latents": np.zeros((T, 4, 8, 9))}, ValueError, r"latents must have shape \(1, 2, 4, 8, 8\), got "
                                                            r"\(2, 4, 8, 9\)"),
    (None, {"latents": np.zeros((T, 4, 8, 8)), "noise": np.zeros((T, 4, 8, 8))}, ValueError, "same argument"),
    (None, {"cond_noise": np.zeros((2, 3, H, W))}, ValueError, r"cond_noise must have shape \(1, 3, 64, 64\)"),
    (None, {"output_type": "pt"}, ValueError, "output_type must be one of .* got 'pt'"),
    (None, {"num_videos_per_prompt": 2}, ValueError, "makes 2 videos: pass output_type='np' or 'pil'"),
    (None, {"num_videos_per_prompt": 0}, ValueError, "num_videos_per_prompt must be an int >= 1, got 0"),
    (None, {"resize_mode": "fill"}, ValueError, r"resize_mode must be one of \('cover', 'stretch'\), got 'fill'"),
    (None, {"num_inference_step": 3}, ValueError, "unknown sampling option 'num_inference_step'"),
    (None, {"num_steps": 3, "num_inference_steps": 3}, ValueError, "'num_steps' and 'num_inference_steps' are the "
                                                                   "same option"),
    (None, {"height": 60}, ValueError, "height/width must be positive multiples of 64, got 60x64"),
    (None, {"callback_on_step_end": 3}, ValueError, "callback_on_step_end must be callable, got int"),
])
def test_bad_inputs_fail_with_one_line(pipe, images, image, kwargs, error, message):
    with pytest.raises(error, match=message) as info:
        pipe(images[0] if image is None else image, progress=False, **kwargs)
    assert "\n" not in str(info.value)


def tiny_state(model):
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def assert_same_weights(pipe, model):
    loaded = tiny_state(pipe.model)
    for name, value in tiny_state(model).items():
        np.testing.assert_array_equal(loaded[name], value)


def test_from_pretrained_infers_the_config(model, tiny_model_cfg, tmp_path):
    state = tiny_state(model)
    save_tensors(state, tmp_path / "weights.safetensors")
    save_tensors(convert_from_ours(state, tiny_model_cfg, "stability"), tmp_path / "svd_tiny_stability.safetensors")
    save_diffusers_folder(convert_from_ours(state, tiny_model_cfg, "diffusers"), tmp_path / "svd-tiny-diffusers")
    for path in ("weights.safetensors", "svd_tiny_stability.safetensors", "svd-tiny-diffusers"):
        loaded = ImageToVideoPipeline.from_pretrained(tmp_path / path)
        assert loaded.config_name == "svd_tiny" and loaded.defaults.num_frames == 6
        assert_same_weights(loaded, model)
    assert ImageToVideoPipeline.from_pretrained(tmp_path / "weights.safetensors", "svd_tiny").config_name == "svd_tiny"


def test_from_pretrained_errors(model, tmp_path):
    state = {k: v for k, v in tiny_state(model).items() if not k.startswith("vae.decoder.")}
    save_tensors(state, tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match=r"no config in configs/ fits its tensors \(tried .*svd_tiny"):
        ImageToVideoPipeline.from_pretrained(tmp_path / "partial.safetensors")
    with pytest.raises(CheckpointError, match="does not match the model config: .* missing: vae.decoder"):
        ImageToVideoPipeline.from_pretrained(tmp_path / "partial.safetensors", "svd_tiny")
    with pytest.raises(FileNotFoundError, match="nope.ckpt' does not exist"):
        ImageToVideoPipeline.from_pretrained(tmp_path / "nope.ckpt")


def fake_configs():
    """Three configs of one architecture (14, 25, 25 frames) and one of another, as model_configs() gives them."""
    make = lambda arch, frames: OmegaConf.create({"model": {"arch": arch}, "sampling": {"num_frames": frames}})
    return {"svd": make("big", 14), "svd_tiny": make("tiny", 6), "svd_xt": make("big", 25),
            "svd_xt_1_1": make("big", 25)}


def choose(path, fits_arch="big"):
    configs = fake_configs()
    return choose_config(configs, path, lambda name: configs[name].model.arch == fits_arch)


def diffusers_folder(root, name, num_frames):
    (root / name / "unet").mkdir(parents=True)
    (root / name / "unet" / "config.json").write_text(json.dumps({"num_frames": num_frames}))
    return root / name


def test_same_architecture_configs_are_told_apart_by_name_and_num_frames(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose(tmp_path / "svd_xt-993f895f.ckpt") == "svd_xt"
        assert choose(tmp_path / "svd_xt_1_1.safetensors") == "svd_xt_1_1"
        assert choose(tmp_path / "svd.safetensors") == "svd"
        assert choose(tmp_path / "my_tiny_run.ckpt", "tiny") == "svd_tiny"
        assert choose(diffusers_folder(tmp_path, "stable-video-diffusion-img2vid-xt", 25)) == "svd_xt"
        assert choose(diffusers_folder(tmp_path, "stable-video-diffusion-img2vid-xt-1-1", 25)) == "svd_xt_1_1"
        assert choose(diffusers_folder(tmp_path, "stable-video-diffusion-img2vid", 14)) == "svd"
    with pytest.warns(UserWarning, match="its tensors fit svd, svd_xt, svd_xt_1_1 alike; using svd"):
        assert choose(tmp_path / "next_model.safetensors") == "svd"
    assert choose(tmp_path / "svd.safetensors", "other") is None
    assert {"svd", "svd_xt", "svd_tiny"} <= set(model_configs()) and "train_tiny" not in model_configs()


def test_command_line_reads_the_config_from_the_checkpoint(model, tmp_path):
    save_tensors(tiny_state(model), tmp_path / "tiny.safetensors")
    Image.fromarray(np.full((100, 300, 3), 128, np.uint8)).save(tmp_path / "wide.png")
    image_to_video.main(["--checkpoint", str(tmp_path / "tiny.safetensors"), "--image", str(tmp_path / "wide.png"),
                         "--resize", "stretch", "--num-frames", "2", "--num-steps", "1", "--no-progress",
                         "--output", str(tmp_path / "frames")])
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == 2 and np.asarray(Image.open(frames[0])).shape == (64, 128, 3)
