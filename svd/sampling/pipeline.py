"""Image-to-video pipeline: conditioning, guided Euler-EDM sampling and chunked decoding.

The call takes the argument names of diffusers' StableVideoDiffusionPipeline as well as ours
(SamplingOptions), images in any size and form (svd.io.media.rgb_images, svd.models.resize.fit_image),
numpy generators as mindone does, explicit latents, and three output types.
"""
import dataclasses
import numbers
from dataclasses import dataclass
from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from PIL import Image
from tqdm.auto import tqdm

from svd.io.media import rgb_images, to_uint8
from svd.io.pretrained import load_pretrained
from svd.models.lora import load_lora
from svd.models.memory import memory_budget
from svd.models.resize import RESIZE_MODES, fit_image
from svd.sampling.diffusion import edm_sigmas, euler_edm_sample, guidance_scale

OUTPUT_TYPES = (None, "np", "pil", "latent")
DIFFUSERS_NAMES = {"num_inference_steps": "num_steps"}


@dataclass
class SamplingOptions:
    """Sampling settings. ``fps`` is the clip's frame rate: the model is conditioned on ``fps - 1``, as in
    training and as diffusers does with its ``fps`` argument."""
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
    split_guidance: Optional[bool] = None  # None: two UNet calls per step only when one would exceed the memory budget

    @classmethod
    def from_config(cls, sampling_cfg, **overrides):
        values = {k: v for k, v in dict(sampling_cfg).items() if k in cls.__dataclass_fields__}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def updated(self, **overrides):
        """A copy with ``overrides`` (our names or diffusers', e.g. ``num_inference_steps``); None keeps a value."""
        values, given = {}, {}
        for name, value in overrides.items():
            field = DIFFUSERS_NAMES.get(name, name)
            if field not in self.__dataclass_fields__:
                known = sorted(set(self.__dataclass_fields__) | set(DIFFUSERS_NAMES))
                raise ValueError(f"unknown sampling option '{name}'; expected one of {known}")
            if value is None:
                continue
            if field in given:
                raise ValueError(f"'{given[field]}' and '{name}' are the same option; pass one")
            values[field], given[field] = value, name
        return dataclasses.replace(self, **values)


def split_guidance(model, options):
    """Whether a guided step runs its unconditional and conditional halves as two UNet calls instead of one.

    One call of twice the batch is faster at small sizes; two calls halve the activation peak (same result to
    float rounding). ``options.split_guidance`` None (auto) splits once one UNet activation of the doubled batch at
    full latent resolution would exceed the memory budget: SVD-XT's 25 frames at 576x1024 (590 MB), not 14 frames.
    """
    if options.split_guidance is not None:
        return options.split_guidance
    down = model.downscale
    activation = 2 * options.num_frames * (options.height // down) * (options.width // down) * 4
    return activation * model.unet.model_channels > memory_budget()


def guided_denoiser(model, conditions, num_frames, split):
    """``denoise(x, sigma) -> (unconditional, conditional)`` x0 estimates of one video, in one UNet call or two."""
    cond, uncond = conditions
    if split:
        indicator = Tensor(np.zeros((1, num_frames), np.float32))

        def denoise_halves(x, sigma):
            sigmas = ops.fill(ms.float32, (num_frames,), sigma)
            return model.denoise(x, sigmas, *uncond, indicator), model.denoise(x, sigmas, *cond, indicator)
        return denoise_halves
    batched = [ops.cat((u, c), axis=0) for u, c in zip(uncond, cond)]
    indicator = Tensor(np.zeros((2, num_frames), np.float32))

    def denoise_joint(x, sigma):
        sigmas = ops.fill(ms.float32, (2 * num_frames,), sigma)
        return ops.chunk(model.denoise(ops.cat((x, x), axis=0), sigmas, *batched, indicator), 2, axis=0)
    return denoise_joint


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


def validate_call(num_videos_per_prompt, output_type, resize_mode, callback_on_step_end):
    """One-line errors for the call's own arguments, before any work is done."""
    if not isinstance(num_videos_per_prompt, numbers.Integral) or num_videos_per_prompt < 1:
        raise ValueError(f"num_videos_per_prompt must be an int >= 1, got {num_videos_per_prompt!r}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if callback_on_step_end is not None and not callable(callback_on_step_end):
        raise ValueError(f"callback_on_step_end must be callable, got {type(callback_on_step_end).__name__}")


def as_generator(value):
    """A numpy Generator from an int seed or a Generator (mindone's convention)."""
    if isinstance(value, np.random.Generator):
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return np.random.default_rng(int(value))
    raise ValueError("generator must be an int seed or a numpy.random.Generator (or a list of them, one per "
                     f"image), got {type(value).__name__}")


def image_generators(generator, num_images, seed):
    """One generator per image: a list gives each image its own; otherwise all share one, drawn in order."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != num_images:
            raise ValueError(f"generator list has {len(generator)} entries for {num_images} images")
        return [as_generator(g) for g in generator]
    return [as_generator(seed if generator is None else generator)] * num_images


def stacked(array, count, item_shape, name):
    """``array`` as ``(count, *item_shape)`` float32 (the leading axis may be left out when count is 1)."""
    array = np.asarray(array, np.float32)
    if count == 1 and array.shape == item_shape:
        array = array[None]
    if array.shape != (count,) + item_shape:
        raise ValueError(f"{name} must have shape {(count,) + item_shape}, got {array.shape}")
    return array


def to_model_range(image):
    """``H x W x 3`` in [0, 1] -> ``(1, 3, H, W)`` in [-1, 1], the range the VAE and CLIP tower take."""
    return image.transpose(2, 0, 1)[None] * 2.0 - 1.0


class ImageToVideoPipeline:
    """Turns RGB images into videos of ``num_frames`` frames with an SVDModel.

    ``defaults``: the SamplingOptions a call starts from (``from_pretrained`` takes them from the config).
    """

    def __init__(self, model, defaults=None, config_name=None):
        self.model = model
        self.model.set_train(False)
        self.defaults = SamplingOptions() if defaults is None else defaults
        self.config_name = config_name

    @classmethod
    def from_pretrained(cls, path, config=None):
        """A pipeline from a checkpoint (file or diffusers folder, any layout ``load_weights`` reads).

        ``config``: a name from configs/ or a YAML path; None infers it (svd.io.pretrained).
        """
        name, cfg, model = load_pretrained(path, config)
        return cls(model, SamplingOptions.from_config(cfg.sampling), name)

    def load_lora(self, path, scale=1.0, merge=False):
        """Apply a LoRA file at ``scale``, unmerged or merged into the weights (svd.models.lora.load_lora); call it once
        per LoRA. In graph mode an unmerged LoRA must come before the first video."""
        return load_lora(self.model, path, scale, merge)

    def sampling_options(self, options=None, **overrides):
        """``options`` (default: the pipeline's defaults) with keyword overrides in our or diffusers' names."""
        return (self.defaults if options is None else options).updated(**overrides)

    def latent_shape(self, options):
        """``(T, C, h, w)`` of one video's latents."""
        down = self.model.downscale
        return options.num_frames, self.model.latent_channels, options.height // down, options.width // down

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

    def sample_latents(self, conditions, options, noise, progress=True, callback=None, guidance=None):
        """Guided Euler-EDM sampling of one video from ``noise`` (unit variance) and ``conditioning``'s pair.

        ``guidance``: per-frame guidance scales ``(T,)`` in place of ``options.guider``'s.
        """
        model, t = self.model, options.num_frames
        if guidance is None:
            guidance = guidance_scale(options.guider, t, options.min_guidance_scale, options.max_guidance_scale)
        scale = Tensor(np.asarray(guidance, np.float32).reshape(t, 1, 1, 1))
        denoise_pair = guided_denoiser(model, conditions, t, split_guidance(model, options))

        def guided_denoise(x, sigma):
            d_uncond, d_cond = denoise_pair(x, sigma)
            return d_uncond + scale * (d_cond - d_uncond)

        sigmas = edm_sigmas(options.num_steps, options.sigma_min, options.sigma_max, options.rho)
        return euler_edm_sample(guided_denoise, Tensor(noise), sigmas, progress, callback)

    def decode(self, latents, options, progress=True):
        """Latents ``(T, C, h, w)`` -> frames ``(T, H, W, 3)`` in [0, 1], ``decode_chunk_size`` frames at a time."""
        chunk = options.decode_chunk_size
        frames = []
        for start in tqdm(range(0, latents.shape[0], chunk), desc="decoding", disable=not progress):
            frames.append(self.model.decode(latents[start:start + chunk]))
        video = ops.cat(frames, axis=0)
        return ops.clamp((video + 1.0) / 2.0, 0.0, 1.0).transpose(0, 2, 3, 1).asnumpy()

    def step_callback(self, callback_on_step_end, video):
        """The sampler's ``callback(step, sigma, x)`` calling a diffusers-style ``callback_on_step_end``."""
        if callback_on_step_end is None:
            return None

        def callback(step, sigma, latents):
            out = callback_on_step_end(self, step, sigma, {"latents": latents, "video": video})
            return out.get("latents", latents) if isinstance(out, dict) else latents
        return callback

    def __call__(self, image, options=None, *, num_videos_per_prompt=1, generator=None, latents=None,
                 output_type=None, callback_on_step_end=None, resize_mode="cover", noise=None, cond_noise=None,
                 progress=True, **overrides):
        """Videos from ``image``: a PIL image, a path or an ``H x W x 3`` array of any size (uint8, uint16, or
        float in [0, 1]); a list of those (or an ``N x H x W x 3`` array) for a batch.

        ``options`` (default: the pipeline's) and keyword overrides in our names or diffusers'
        (``height``, ``width``, ``num_frames``, ``num_inference_steps``, ``min_guidance_scale``,
        ``max_guidance_scale``, ``fps``, ``motion_bucket_id``, ``noise_aug_strength``, ``decode_chunk_size``)
        set the sampling. Each image is fitted to height x width by ``resize_mode`` (``cover``: scale
        and centre-crop; ``stretch``: scale each axis) and gives ``num_videos_per_prompt`` videos,
        ordered image by image.

        Randomness: ``generator`` is an int seed or a ``np.random.Generator`` shared by the batch
        (default: ``options.seed``), or a list with one per image. Each image draws its augmentation
        noise, then the initial latents of each of its videos. ``latents`` (``noise`` is its older
        name), ``(videos, T, C, h, w)`` of unit variance, and ``cond_noise``, ``(images, 3, H, W)``,
        replace those draws (the leading axis may be left out for one video / image).

        ``callback_on_step_end(pipeline, step, sigma, {"latents", "video"})`` runs after every sampling
        step of every video; a returned dict with "latents" (a Tensor) replaces them.

        Returns by ``output_type``: None, the frames ``(T, H, W, 3)`` in [0, 1] of the one video
        (an error when the call makes several); "np", ``(videos, T, H, W, 3)``; "pil", a list of
        frame lists per video; "latent", the undecoded latents ``(videos, T, C, h, w)``.
        """
        validate_call(num_videos_per_prompt, output_type, resize_mode, callback_on_step_end)
        options = self.sampling_options(options, **overrides)
        validate(options, self.model)
        images = []
        for pixels in rgb_images(image):  # a loop, not a comprehension: fit_image's warning points at our caller
            images.append(fit_image(pixels, options.height, options.width, resize_mode))
        count = len(images) * num_videos_per_prompt
        if output_type is None and count > 1:
            raise ValueError(f"this call makes {count} videos: pass output_type='np' or 'pil' (None returns one video)")
        starts, cond_noise = self.given_noise(latents, noise, cond_noise, len(images), count, options)
        rngs = image_generators(generator, len(images), options.seed)
        results = []
        for i, pixels in enumerate(images):
            videos = range(i * num_videos_per_prompt, (i + 1) * num_videos_per_prompt)
            results += self.image_videos(to_model_range(pixels), options, rngs[i], videos, starts,
                                         None if cond_noise is None else cond_noise[i][None],
                                         progress, callback_on_step_end)
        return self.outputs(results, options, output_type, progress)

    def given_noise(self, latents, noise, cond_noise, num_images, num_videos, options):
        """The caller's initial latents and augmentation noise, shape-checked before any work (None: drawn)."""
        if latents is not None and noise is not None:
            raise ValueError("'latents' and 'noise' are the same argument; pass one")
        starts = latents if latents is not None else noise
        if starts is not None:
            starts = stacked(starts, num_videos, self.latent_shape(options), "latents")
        if cond_noise is not None:
            cond_noise = stacked(cond_noise, num_images, (3, options.height, options.width), "cond_noise")
        return starts, cond_noise

    def image_videos(self, pixels, options, rng, videos, starts, cond_noise, progress, callback_on_step_end):
        """Latents of the ``videos`` (indices into ``starts``) of one image: the conditioning is computed
        once; noise not given is drawn from ``rng`` (augmentation first, then each video's latents)."""
        if cond_noise is None:
            cond_noise = rng.standard_normal(pixels.shape).astype(np.float32)
        conditions = self.conditioning(pixels, options, cond_noise)
        latents = []
        for v in videos:
            start = rng.standard_normal(self.latent_shape(options)).astype(np.float32) if starts is None else starts[v]
            latents.append(self.sample_latents(conditions, options, start, progress,
                                               self.step_callback(callback_on_step_end, v)))
        return latents

    def outputs(self, latents, options, output_type, progress):
        """Per-video latents in the form ``output_type`` asks for."""
        if output_type == "latent":
            return np.stack([x.asnumpy() for x in latents])
        videos = [self.decode(x, options, progress) for x in latents]
        if output_type is None:
            return videos[0]
        if output_type == "np":
            return np.stack(videos)
        return [[Image.fromarray(frame) for frame in to_uint8(video)] for video in videos]
