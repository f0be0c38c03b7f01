"""The frame-by-frame decoder (svd.models.streamed_decoder) against the compiled-form Decoder on the same weights."""
import numpy as np
import pytest
from mindspore import Tensor

from svd.io.config import build_model, load_config
from svd.models.streamed_decoder import decode_frame_by_frame, frame_group_stats, video_group_stats
from svd.models.vae import Decoder


def randomized_decoder(temporal, seed=1):
    """A small decoder whose norms and mix factors are far from their initial values, so every part matters."""
    decoder = Decoder(32, [1, 2], 1, 4, 3, (3, 1, 1), temporal)
    rng = np.random.default_rng(seed)
    for p in decoder.get_parameters():
        offset = 1.0 if p.name.endswith(".weight") and p.ndim == 1 else 0.0
        p.set_data(Tensor((rng.standard_normal(p.shape) * 0.3 + offset).astype(np.float32)))
    return decoder


@pytest.mark.parametrize("temporal", [True, False])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5])
def test_frame_by_frame_equals_the_decoder(temporal, num_frames):
    decoder = randomized_decoder(temporal)
    z = Tensor(np.random.default_rng(num_frames).standard_normal((num_frames, 4, 12, 16)).astype(np.float32))
    expected = decoder(z, num_frames).asnumpy()
    got = decode_frame_by_frame(decoder, z).asnumpy()
    assert got.shape == expected.shape
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("fused", [True, False])
def test_group_statistics_over_frames_are_exact(fused, monkeypatch):
    """Both ways of taking a frame's statistics (the fused LayerNorm outputs on CPU, two passes elsewhere)."""
    monkeypatch.setattr("svd.models.streamed_decoder.layer_norm_gives_variance", lambda: fused)
    rng = np.random.default_rng(0)
    frames = (rng.standard_normal((3, 1, 64, 20, 24)) * 3 + 7).astype(np.float32)
    mean, var = video_group_stats([Tensor(f) for f in frames], 32)
    grouped = frames.astype(np.float64).reshape(3, 32, -1).transpose(1, 0, 2).reshape(32, -1)
    np.testing.assert_allclose(mean, grouped.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(var, grouped.var(axis=1), rtol=1e-6)
    one_mean, one_var = frame_group_stats(Tensor(frames[0]), 32, fused=fused)
    np.testing.assert_allclose(one_mean, frames[0].astype(np.float64).reshape(32, -1).mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(one_var, frames[0].astype(np.float64).reshape(32, -1).var(axis=1), rtol=1e-6)


@pytest.mark.parametrize("temporal", [True, False])
def test_model_decode_runs_the_decoder_frame_by_frame(temporal):
    """SVDModel.decode (PyNative) scales the latents, applies post_quant_conv for the image decoder, streams."""
    cfg = load_config("svd_tiny")
    cfg.model.vae.temporal_decoder = temporal
    model = build_model(cfg, seed=3)
    latents = np.random.default_rng(5).standard_normal((3, 4, 8, 16)).astype(np.float32)
    expected = model.vae.decode(Tensor(latents / model.scale_factor), 3).asnumpy()
    got = model.decode(Tensor(latents)).asnumpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
