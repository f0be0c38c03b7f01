"""The command line end to end on the tiny model, and its one-line errors."""
import imageio.v3 as iio
import numpy as np
import pytest

import image_to_video
from svd.diffusion import edm_sigmas, guidance_scale

ROOT_ARGS = ["--config", "svd_tiny", "--image", "assets/demo.png", "--num-steps", "1", "--num-frames", "3",
             "--no-progress"]


@pytest.fixture(autouse=True)
def repo_root(monkeypatch):
    from pathlib import Path
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)


def test_writes_gif_and_png_frames(tmp_path):
    image_to_video.main(ROOT_ARGS + ["--random-weights", "--decode-chunk-size", "2", "--output",
                                     str(tmp_path / "v.gif")])
    video = iio.imread(tmp_path / "v.gif")
    assert video.shape[:3] == (3, 64, 128)
    image_to_video.main(ROOT_ARGS + ["--random-weights", "--output", str(tmp_path / "frames")])
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [f"frame_{i:04d}.png" for i in range(3)]


def test_unreadable_image(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="bad.png' cannot be read as an image"):
        image_to_video.main(ROOT_ARGS + ["--random-weights", "--image", str(bad)])


def test_missing_weights_and_bad_size(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.safetensors' does not exist"):
        image_to_video.main(ROOT_ARGS + ["--checkpoint", str(tmp_path / "nope.safetensors")])
    with pytest.raises(ValueError, match="height/width must be positive multiples of 64, got 60x128"):
        image_to_video.main(ROOT_ARGS + ["--random-weights", "--height", "60"])
    with pytest.raises(ValueError, match="expected a .mp4 or .gif file"):
        image_to_video.main(ROOT_ARGS + ["--random-weights", "--output", str(tmp_path / "v.avi")])


def test_schedules():
    sigmas = edm_sigmas(25)
    assert sigmas[0] == pytest.approx(700.0) and sigmas[-2] == pytest.approx(0.002) and sigmas[-1] == 0.0
    assert np.all(np.diff(sigmas) < 0)
    linear = guidance_scale("linear", 14, 1.0, 2.5)
    assert linear[0] == 1.0 and linear[-1] == 2.5
    triangle = guidance_scale("triangle", 5, 1.0, 3.0)
    np.testing.assert_allclose(triangle, [1.0, 2.0, 3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="guider 'cosine' unknown"):
        guidance_scale("cosine", 5, 1.0, 3.0)
