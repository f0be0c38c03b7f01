"""The shipped toy model (models/svd_toy.safetensors, trained by the toy recipe) on the held-out demo image,
run exactly as `make demo` runs it: the first frame matches the input, the video moves about as much as the
real clip did, and its frames stay coherent (flow-warping error nearer the real clip's than random weights')."""
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

import image_to_video
from svd.io.config import build_model, load_config
from svd.io.media import load_image
from svd.metrics import mean_frame_difference, psnr, warping_error
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions
from svd_tools.demo import write_comparison

ROOT = Path(__file__).resolve().parents[1]
DEMO = json.loads((ROOT / "assets" / "toy_demo" / "demo.json").read_text())


def frames_of(folder):
    return np.stack([np.asarray(Image.open(p), np.float32) / 255.0 for p in sorted(Path(folder).glob("*.png"))])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo's video (the Makefile's arguments, PNG frames instead of mp4/gif), the real clip, random weights."""
    out = tmp_path_factory.mktemp("demo") / "frames"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)  # the demo's paths are relative to the repository, as `make demo` runs it
        image_to_video.main(DEMO["arguments"] + ["--output", str(out), "--no-progress"])
    video = frames_of(out)
    cfg = load_config(DEMO["config"])
    options = SamplingOptions.from_config(cfg.sampling, seed=DEMO["seed"], fps=DEMO["fps"],
                                          motion_bucket_id=DEMO["motion_bucket_id"])
    random_video = ImageToVideoPipeline(build_model(cfg, seed=0))(ROOT / DEMO["image"], options, progress=False)
    strip = np.asarray(Image.open(ROOT / DEMO["real_frames"]), np.float32) / 255.0
    real = np.stack(np.split(strip, len(video), axis=1))
    return video, real, random_video, options


def test_first_frame_matches_the_input(demo_run):
    video, _, _, options = demo_run
    given = load_image(ROOT / DEMO["image"], options.height, options.width).astype(np.float32) / 255.0
    assert psnr(video[0], given) >= 22.0


def test_the_video_moves_like_the_real_clip(demo_run):
    video, real, _, _ = demo_run
    ratio = mean_frame_difference(video) / mean_frame_difference(real)
    assert 0.5 <= ratio <= 2.0, ratio


def test_frames_stay_coherent(demo_run):
    video, real, random_video, _ = demo_run
    ours, reference, noise = warping_error(video), warping_error(real), warping_error(random_video)
    assert abs(ours - reference) < abs(ours - noise), (ours, reference, noise)


def test_autoencoder_reconstructs_the_held_out_clip():
    """The shipped VAE (stage 1c decoder) on the demo clip's held-out real frames, through the temporal decoder
    as sampling decodes them: the issue's 26 dB (all 243 held-out frames: outputs/eval/toy.md, README)."""
    from svd_tools.evaluate import reconstruct
    strip = np.asarray(Image.open(ROOT / DEMO["real_frames"]), np.float32) / 255.0
    cfg = load_config(DEMO["config"])
    real = np.stack(np.split(strip, cfg.sampling.num_frames, axis=1))
    model = ImageToVideoPipeline.from_pretrained(ROOT / "models" / "svd_toy.safetensors", DEMO["config"]).model
    scores = [psnr(a, b) for a, b in zip(real, reconstruct(model, real, cfg.sampling.decode_chunk_size))]
    assert np.mean(scores) >= 26.0, scores


def test_comparison_strip_puts_the_real_frames_above_the_demo(tmp_path):
    rng = np.random.default_rng(0)
    real, ours = (rng.integers(0, 256, (4, 18, 3), dtype=np.uint8) for _ in range(2))
    iio.imwrite(tmp_path / "real.png", real)
    iio.imwrite(tmp_path / "ours.png", ours)
    write_comparison(tmp_path / "real.png", tmp_path / "ours.png", tmp_path / "both.png", zoom=2)
    both = iio.imread(tmp_path / "both.png")
    np.testing.assert_array_equal(both[::2, ::2], np.concatenate([real, ours]))
    np.testing.assert_array_equal(both[1::2, 1::2], both[::2, ::2])
    iio.imwrite(tmp_path / "short.png", ours[:, :12])
    with pytest.raises(ValueError, match="short.png.*rebuild the demo assets"):
        write_comparison(tmp_path / "short.png", tmp_path / "ours.png", tmp_path / "no.png")
