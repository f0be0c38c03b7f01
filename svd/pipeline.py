"""Image-to-video pipeline: conditioning, guided Euler-EDM sampling and chunked decoding."""
from dataclasses import dataclass

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from svd.diffusion import edm_sigmas, euler_edm_sample, guidance_scale


@dataclass
class SamplingOptions:
    num_frames: int = 14
    num_steps: int = 25
    height: int = 576
    width: int = 1024
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: int = 14
    guider: str = "linear"
    min_guidance_scale: float = 1.0
    max_guidance_scale: float = 2.5
    sigma_min: float = 0.002
    sigma_max: float = 700.0
    rho: float = 7.0
    seed: int = 42

    @classmethod
    def from_config(cls, sampling_cfg, **overrides):
        values = {k: v for k, v in dict(sampling_cfg).items() if k in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def validate(options, model):
    """One-line errors for values the model cannot run with."""
    multiple = model.size_multiple
    if options.height % multiple or options.width % multiple or options.height <= 0 or options.width <= 0:
        raise ValueError(f"height/width must be positive multiples of {multiple}, got {options.height}x{options.width}")
    for name in ("num_frames", "num_steps", "decode_chunk_size"):
        if getattr(options, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(options, name)}")
    if options.noise_aug_strength < 0:
        raise ValueError(f"noise_aug_strength must be >= 0, got {options.noise_aug_strength}")


def image_to_tensor(image):
    """HWC uint8 RGB (or float in [0, 1]) -> ``(1, 3, H, W)`` float32 in ``[-1, 1]``."""
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB, got shape {array.shape}")
    array = array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)
    return array.transpose(2, 0, 1)[None] * 2.0 - 1.0


class ImageToVideoPipeline:
    """Turns one RGB image into ``num_frames`` frames with an SVDModel."""

    def __init__(self, model):
        self.model = model
        self.model.set_train(False)

    def conditioning(self, image, options, cond_noise):
        """Conditional and unconditional (zero image) inputs, one row per frame."""
        model, t = self.model, options.num_frames
        image = Tensor(image)
        context = model.embed_image(image)
        concat = model.condition_latent(image + options.noise_aug_strength * Tensor(cond_noise))
        vector = model.vector([options.fps - 1], [options.motion_bucket_id], [options.noise_aug_strength])
        repeat = lambda x: ops.repeat_interleave(x, t, 0)
        cond = (repeat(concat), repeat(context), repeat(vector))
        uncond = (ops.zeros_like(cond[0]), ops.zeros_like(cond[1]), cond[2])
        return cond, uncond

    def sample_latents(self, image, options, noise, cond_noise, progress=True):
        model, t = self.model, options.num_frames
        cond, uncond = self.conditioning(image, options, cond_noise)
        batched = [ops.cat((u, c), axis=0) for u, c in zip(uncond, cond)]
        indicator = Tensor(np.zeros((2, t), np.float32))
        scale = Tensor(guidance_scale(options.guider, t, options.min_guidance_scale,
                                      options.max_guidance_scale).reshape(t, 1, 1, 1))

        def guided_denoise(x, sigma):
            x_in = ops.cat((x, x), axis=0)
            sigmas = ops.fill(ms.float32, (2 * t,), sigma)
            d_uncond, d_cond = ops.chunk(model.denoise(x_in, sigmas, *batched, indicator), 2, axis=0)
            return d_uncond + scale * (d_cond - d_uncond)

        sigmas = edm_sigmas(options.num_steps, options.sigma_min, options.sigma_max, options.rho)
        return euler_edm_sample(guided_denoise, Tensor(noise), sigmas, progress)

    def decode(self, latents, options, progress=True):
        chunk = options.decode_chunk_size
        frames = []
        for start in tqdm(range(0, latents.shape[0], chunk), desc="decoding", disable=not progress):
            frames.append(self.model.decode(latents[start:start + chunk]))
        video = ops.cat(frames, axis=0)
        return ops.clamp((video + 1.0) / 2.0, 0.0, 1.0).transpose(0, 2, 3, 1).asnumpy()

    def __call__(self, image, options, noise=None, cond_noise=None, progress=True):
        """``image``: H x W x 3 RGB already at ``options`` size. Returns ``(T, H, W, 3)`` floats in [0, 1].

        ``noise`` (initial latents) and ``cond_noise`` (augmentation noise) default to draws from ``seed``.
        """
        validate(options, self.model)
        pixels = image_to_tensor(image)
        if pixels.shape[2:] != (options.height, options.width):
            raise ValueError(f"image is {pixels.shape[2]}x{pixels.shape[3]}, expected "
                             f"{options.height}x{options.width} (resize it first)")
        rng = np.random.default_rng(options.seed)
        latent_shape = (options.num_frames, self.model.latent_channels,
                        options.height // self.model.downscale, options.width // self.model.downscale)
        if cond_noise is None:
            cond_noise = rng.standard_normal(pixels.shape).astype(np.float32)
        if noise is None:
            noise = rng.standard_normal(latent_shape).astype(np.float32)
        latents = self.sample_latents(pixels, options, noise, cond_noise, progress)
        return self.decode(latents, options, progress)
