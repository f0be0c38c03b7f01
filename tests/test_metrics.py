"""The evaluation numbers on videos whose answers are known."""
import numpy as np
import pytest

from svd.metrics import bicubic_baseline, mean_flow, mean_frame_difference, psnr, ssim, warping_error


def textured(h=64, w=96, seed=0):
    """A smooth random texture (flow needs structure), values in [0.1, 0.9]."""
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 1, (h // 4, w // 4, 3)).astype(np.float32)
    return 0.1 + 0.8 * cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def panning(frames=5, step=2):
    """Frames of a wide texture seen through a window moving ``step`` pixels right per frame."""
    wide = textured(64, 96 + frames * step)
    return np.stack([wide[:, i * step:i * step + 96] for i in range(frames)])


def test_psnr_of_a_known_error():
    a = np.zeros((8, 8, 3))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    assert psnr(a, a) == float("inf")


def test_ssim_is_one_for_identical_and_lower_for_noisy():
    image = textured()
    noisy = np.clip(image + np.random.default_rng(1).normal(0, 0.1, image.shape), 0, 1)
    assert ssim(image, image) == pytest.approx(1.0)
    assert ssim(image, noisy) < 0.9


def test_bicubic_baseline_loses_detail():
    image = textured(seed=2)
    base = bicubic_baseline(image)
    assert base.shape == image.shape and 15 < psnr(image, base) < 60


def test_motion_numbers_of_a_pan_and_a_still():
    video = panning(step=2)
    assert mean_flow(video) == pytest.approx(2.0, abs=0.5)
    still = np.repeat(video[:1], 5, axis=0)
    assert mean_flow(still) < 0.05 and mean_frame_difference(still) == 0.0
    assert mean_frame_difference(video) > 0.01


def test_warping_error_separates_coherent_motion_from_noise():
    video = panning(step=2)
    noise = np.random.default_rng(3).uniform(0, 1, video.shape).astype(np.float32)
    assert warping_error(video) < 0.2 * mean_frame_difference(video)
    assert warping_error(noise) > 5 * warping_error(video)
