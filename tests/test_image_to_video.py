"""The command line end to end on the tiny model, and its one-line errors."""
import imageio.v3 as iio
import numpy as np
import pytest

import image_to_video
from svd.sampling.diffusion import edm_sigmas, guidance_scale

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


def test_several_outputs_and_overwrite(tmp_path):
    """One run writes every --output; an existing output is replaced only with --overwrite."""
    outputs = [str(tmp_path / "v.mp4"), str(tmp_path / "v.gif"), str(tmp_path / "strip.png"), str(tmp_path / "f")]
    image_to_video.main(ROOT_ARGS + ["--random-weights", "--output", *outputs])
    gif = iio.imread(outputs[1])
    assert gif.shape[:3] == (3, 64, 128) and iio.imread(outputs[0], plugin="FFMPEG").shape[:3] == (3, 64, 128)
    frames = [iio.imread(tmp_path / "f" / f"frame_{i:04d}.png") for i in range(3)]
    np.testing.assert_array_equal(iio.imread(outputs[2]), np.concatenate(frames, axis=1))
    with pytest.raises(FileExistsError, match="v.mp4' exists; pass --overwrite to replace it"):
        image_to_video.main(ROOT_ARGS + ["--random-weights", "--output", *outputs])
    with pytest.raises(ValueError, match="--output names the same path twice"):
        image_to_video.main(ROOT_ARGS + ["--random-weights", "--output", outputs[1], outputs[1]])
    image_to_video.main(ROOT_ARGS + ["--random-weights", "--seed", "7", "--overwrite", "--output", *outputs])
    assert not np.array_equal(iio.imread(outputs[1]), gif)


def test_sampling_that_goes_non_finite_names_the_step():
    from mindspore import Tensor
    from svd.sampling.diffusion import NonFiniteSampleError, euler_edm_sample
    calls = []

    def denoise(x, sigma):
        calls.append(sigma)
        return x * (np.nan if len(calls) == 3 else 0.5)
    with pytest.raises(NonFiniteSampleError, match=r"sampling step 3/4 \(sigma .*\) gave NaN/Inf values: with --fp16"):
        euler_edm_sample(denoise, Tensor(np.ones((1, 2, 2, 2), np.float32)), edm_sigmas(4), progress=False)
    assert len(calls) == 3


def test_transparent_pixels_are_composited_over_white(tmp_path, capsys):
    from PIL import Image
    from svd.io.media import read_image
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:2, ..., 3] = 255
    rgba[2:, ..., 3] = 0  # transparent pixels that store black-ish red
    rgba[3, 3, 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = read_image(tmp_path / "a.png")
    assert got.dtype == np.uint8 and got.shape == (4, 4, 3)
    np.testing.assert_array_equal(got[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(got[2, 0], [255, 255, 255])
    np.testing.assert_array_equal(got[3, 3], [227, 127, 127])  # 200 * 128/255 + 255 * 127/255 = 227.4
    assert "transparent pixels (50%); they are composited over white" in capsys.readouterr().err
    Image.fromarray(rgba[..., :3], "RGB").save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_image(tmp_path / "b.png"), rgba[..., :3])
    assert capsys.readouterr().err == ""


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
