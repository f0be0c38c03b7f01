"""Guidance's two halves as two UNet calls (less memory) against one call of twice the batch."""
import numpy as np
import pytest

from svd.io.config import build_model, load_config
from svd.models.memory import set_memory_budget
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions, split_guidance

# 128 px: at 64 px the UNet's bottom level is 1x1, where a GroupNorm over 2 values turns rounding differences
# between batch sizes into 1e-3 changes.
H, W, T = 128, 128, 3


@pytest.fixture(scope="module")
def pipe(tiny_cfg):
    defaults = SamplingOptions.from_config(tiny_cfg.sampling, num_frames=T, num_steps=3, height=H, width=W,
                                           decode_chunk_size=T)
    return ImageToVideoPipeline(build_model(tiny_cfg, seed=3), defaults)


def sample(pipe, image, split, monkeypatch):
    """Latents of one seeded run and the batch size of every UNet call it made."""
    batches = []
    denoise = pipe.model.denoise

    def counting(x, *args):
        batches.append(x.shape[0])
        return denoise(x, *args)
    with monkeypatch.context() as patch:
        patch.setattr(pipe.model, "denoise", counting)
        latents = pipe(image, split_guidance=split, generator=7, output_type="latent", progress=False)
    return latents, batches


def test_split_halves_equal_one_joint_call(pipe, monkeypatch):
    image = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    joint, joint_batches = sample(pipe, image, False, monkeypatch)
    split, split_batches = sample(pipe, image, True, monkeypatch)
    assert joint_batches == [2 * T] * 3 and split_batches == [T] * 6
    assert np.abs(joint).max() > 0.1
    np.testing.assert_allclose(split, joint, rtol=0, atol=2e-5 * np.abs(joint).max())


def test_auto_splits_only_past_the_memory_budget():
    model = build_model(load_config("svd_xt"), lazy=True)
    options = SamplingOptions(num_frames=25, height=576, width=1024)
    try:
        set_memory_budget(512)  # the automatic budget's cap
        assert split_guidance(model, options)  # 2 x 25 x 72 x 128 x 320 x 4 bytes = 590 MB
        assert not split_guidance(model, options.updated(num_frames=14))  # 330 MB
        assert not split_guidance(model, options.updated(split_guidance=False))
        assert split_guidance(model, options.updated(num_frames=14, split_guidance=True))
    finally:
        set_memory_budget(None)
