"""EDM machinery of SVD: v-scaling denoiser, Karras/EDM sigmas, Euler sampler, frame-wise guiders."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm


def edm_sigmas(num_steps, sigma_min=0.002, sigma_max=700.0, rho=7.0):
    """Descending EDM (Karras) noise levels with a trailing 0: ``num_steps + 1`` values."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    ramp = np.linspace(0.0, 1.0, num_steps)
    max_inv, min_inv = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return np.append(sigmas, 0.0).astype(np.float32)


def v_scalings(sigma):
    """``c_skip, c_out, c_in, c_noise`` of VScalingWithEDMcNoise (sigma_data = 1), all fp32.

    c_noise = ln(sigma)/4 stays a float: casting it to int would destroy the conditioning.
    """
    sigma = sigma.astype(ms.float32)
    c_skip = 1.0 / (sigma ** 2 + 1.0)
    c_out = -sigma / ops.sqrt(sigma ** 2 + 1.0)
    c_in = 1.0 / ops.sqrt(sigma ** 2 + 1.0)
    c_noise = 0.25 * ops.log(sigma)
    return c_skip, c_out, c_in, c_noise


def append_dims(x, ndim):
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def linear_guidance_scale(num_frames, min_scale, max_scale):
    """Per-frame guidance ``linspace(min, max, T)``: frame 0 gets ``min_scale``."""
    return np.linspace(min_scale, max_scale, num_frames).astype(np.float32)


def triangle_guidance_scale(num_frames, min_scale, max_scale, period=1.0):
    """Triangle wave over the clip: ``min_scale`` at both ends, ``max_scale`` mid-period."""
    v = np.linspace(0.0, 1.0, num_frames) / period
    tri = 2.0 * np.abs(v - np.floor(v + 0.5))
    return (tri * (max_scale - min_scale) + min_scale).astype(np.float32)


GUIDERS = {"linear": linear_guidance_scale, "triangle": triangle_guidance_scale}


def guidance_scale(kind, num_frames, min_scale, max_scale, **kwargs):
    if kind not in GUIDERS:
        raise ValueError(f"guider '{kind}' unknown; expected one of {sorted(GUIDERS)}")
    return GUIDERS[kind](num_frames, min_scale, max_scale, **kwargs)


def euler_edm_sample(denoise, noise, sigmas, progress=True, callback=None):
    """Euler sampler without churn: ``x <- x + (sigma_next - sigma) * (x - D(x, sigma)) / sigma``.

    ``denoise(x, sigma)`` returns the (guided) x0 estimate; the last step lands on D.
    ``callback(step, sigma, x)`` runs after each step and returns the ``x`` to continue from.
    A NaN or infinite estimate stops sampling at once (NonFiniteSampleError) instead of a black video.
    """
    x = noise * math.sqrt(1.0 + float(sigmas[0]) ** 2)
    for i in tqdm(range(len(sigmas) - 1), desc="sampling", disable=not progress):
        sigma = float(sigmas[i])
        denoised = denoise(x, sigma)
        if not bool(ops.isfinite(denoised).all()):
            raise NonFiniteSampleError(i, len(sigmas) - 1, sigma)
        x = x + (float(sigmas[i + 1]) - sigma) * ((x - denoised) / sigma)
        if callback is not None:
            x = callback(i, sigma, x)
    return x


class NonFiniteSampleError(FloatingPointError):
    """The denoiser returned NaN/Inf: the message names the step and the usual causes."""

    def __init__(self, step, steps, sigma):
        super().__init__(f"sampling step {step + 1}/{steps} (sigma {sigma:.4g}) gave NaN/Inf values: with --fp16 "
                         "the UNet overflowed (run without --fp16); otherwise the weights are damaged or do not "
                         "belong to this config, or a guidance scale / micro-conditioning value is far outside "
                         "training")


def sample_training_sigmas(rng, num_videos, num_frames, p_mean, p_std):
    """One log-normal sigma per clip, repeated over its frames (``(b t,)`` fp32)."""
    sigma = np.exp(p_mean + p_std * rng.standard_normal(num_videos))
    return Tensor(np.repeat(sigma, num_frames).astype(np.float32))
