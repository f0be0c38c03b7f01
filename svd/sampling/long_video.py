"""Videos longer than the model's trained length, in bounded memory.

Two modes, both built on windows that never exceed what the models were trained on:

``interpolate``: the base model makes ``k`` keyframes, then ``L`` passes of the keyframe-interpolation model
(svd.models.interpolation) each put 3 frames between every pair: ``N = 1 + (k - 1) * 4^L`` frames (5 -> 17 -> 65).
A pass runs in windows of at most the interpolation model's trained length (e.g. 17 frames = 5 keyframes);
neighbouring windows share their end keyframe. Keyframes are kept exactly: during sampling their positions
are held at ``keyframe + sigma * noise`` (inpainting-style, so the frames around them see them at every
step) and the result carries the given latents bit for bit. With ``last_image`` the keyframes are the two
given images (k = 2) and every other frame is interpolated.

``continue``: chunks of the base model's trained length; each chunk's first ``overlap`` latents are the
previous chunk's last ones, held fixed during its sampling like keyframes, and its conditioning image is its
own first frame (the previous chunk's frame ``T - overlap``; with overlap 1 its last frame), decoded. The
CLIP context stays the original image's, which limits identity drift. seam_report measures the frame
difference across the seams against the differences inside chunks.

Memory: every UNet call sees one window (at most the trained length, times 2 for guidance), the VAE decodes
windows of ``decode_chunk_size`` frames (overlapping by ``decode_overlap`` frames, cross-faded, so the
temporal decoder's chunk edges do not flicker). Only the latents and the decoded output grow with N.
"""
import math

import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from svd.io.checkpoint import CheckpointError
from svd.io.config import build_model, load_config
from svd.io.media import rgb_images
from svd.io.pretrained import load_pretrained
from svd.models.interpolation import (KEYFRAME_SPACING, checkpoint_input_channels, frames_for_keyframes,
                                      interpolation_concat, interpolation_config, is_interpolation_model,
                                      keyframe_count, keyframe_positions, load_model_weights)
from svd.models.resize import fit_image
from svd.sampling.diffusion import edm_sigmas
from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions, as_generator, to_model_range, validate

MODES = ("interpolate", "continue")
PASS_FPS = ("same", "scaled")


def interpolation_plan(num_frames, max_keyframes, keyframes=None):
    """``(k, L)`` with ``num_frames = 1 + (k - 1) * 4^L``, ``L >= 1`` and ``2 <= k <= max_keyframes``: the fewest
    passes (most keyframes) unless ``keyframes`` fixes k. One-line errors otherwise."""
    spacing = KEYFRAME_SPACING
    examples = sorted({1 + (k - 1) * spacing ** p for k in (2, 3, 5) for p in (1, 2, 3)})
    rule = (f"--num-frames must be 1 + (k - 1) * {spacing}^L with k keyframes (2..{max_keyframes}, the base model's "
            f"length) and L >= 1 interpolation passes, e.g. {', '.join(map(str, examples[:7]))}")
    if keyframes is not None:
        if not 2 <= keyframes <= max_keyframes:
            raise ValueError(f"--keyframes must be in 2..{max_keyframes} (the base model's length), got {keyframes}")
        passes, gaps = 0, num_frames - 1
        while gaps > keyframes - 1 and gaps % spacing == 0:
            gaps //= spacing
            passes += 1
        if passes < 1 or gaps != keyframes - 1:
            raise ValueError(f"{rule}; with {keyframes} keyframes: "
                             f"{', '.join(str(frames_for_keyframes(keyframes, spacing ** p)) for p in (1, 2, 3))}, "
                             f"got {num_frames}")
        return keyframes, passes
    if isinstance(num_frames, int) and num_frames > 1:
        passes = 1
        while (num_frames - 1) % spacing ** passes == 0:
            k = (num_frames - 1) // spacing ** passes + 1
            if k <= max_keyframes:
                return k, passes
            passes += 1
    raise ValueError(f"{rule}, got {num_frames}")


def two_image_plan(num_frames):
    """Passes L for ``last_image``: the two images are the only keyframes, ``num_frames = 1 + 4^L``."""
    passes, gaps = 0, num_frames - 1
    while gaps > 1 and gaps % KEYFRAME_SPACING == 0:
        gaps //= KEYFRAME_SPACING
        passes += 1
    if passes < 1 or gaps != 1:
        raise ValueError(f"with --last-image, --num-frames must be 1 + {KEYFRAME_SPACING}^L (the two images are the "
                         f"keyframes): 5, 17, 65, 257, ..., got {num_frames}")
    return passes


def interpolation_windows(num_keyframes, window_keyframes):
    """``[(first, last)]`` keyframe indices of the windows of one pass: at most ``window_keyframes`` each,
    consecutive windows sharing their end keyframe, the last possibly shorter."""
    windows, start = [], 0
    while start < num_keyframes - 1:
        end = min(start + window_keyframes - 1, num_keyframes - 1)
        windows.append((start, end))
        start = end
    return windows


def continuation_chunks(num_frames, chunk_frames, overlap):
    """Start frame of every chunk: chunk j covers ``[s_j, s_j + chunk_frames)``, ``s_{j+1} = s_j + chunk_frames -
    overlap``; the last chunk may reach past ``num_frames`` (its tail is dropped)."""
    if not 1 <= overlap < chunk_frames:
        raise ValueError(f"--overlap must be in 1..{chunk_frames - 1} (below the chunk length {chunk_frames}), "
                         f"got {overlap}")
    if num_frames < 1:
        raise ValueError(f"--num-frames must be >= 1, got {num_frames}")
    starts = [0]
    while starts[-1] + chunk_frames < num_frames:
        starts.append(starts[-1] + chunk_frames - overlap)
    return starts


def continuation_seams(num_frames, chunk_frames, overlap):
    """Frame indices s where a chunk's first new frame follows the previous chunk's last (difference s-1 -> s)."""
    starts = continuation_chunks(num_frames, chunk_frames, overlap)
    return [s + overlap for s in starts[1:] if s + overlap < num_frames]


def seam_report(frames, seams):
    """Mean absolute difference of consecutive frames across ``seams`` and inside chunks (all other pairs).

    ``frames`` ``(N, H, W, 3)``; returns ``{"seam", "inside", "ratio"}`` (ratio = seam / inside).
    """
    frames = np.asarray(frames, np.float64)
    steps = np.abs(np.diff(frames, axis=0)).reshape(len(frames) - 1, -1).mean(axis=1)
    at_seam = np.zeros(len(steps), bool)
    at_seam[[s - 1 for s in seams]] = True
    seam = float(steps[at_seam].mean()) if at_seam.any() else float("nan")
    inside = float(steps[~at_seam].mean()) if (~at_seam).any() else float("nan")
    return {"seam": seam, "inside": inside, "ratio": seam / inside if inside > 0 else float("inf")}


def decode_windows(model, latents, chunk, overlap=2, progress=False):
    """Latents ``(N, C, h, w)`` (numpy or Tensor) -> frames ``(N, H, W, 3)`` in [0, 1], decoded ``chunk`` frames at
    a time; consecutive windows overlap by ``overlap`` frames, blended linearly, so the temporal decoder's
    window edges do not show. Peak memory is one window's."""
    latents = latents.asnumpy() if isinstance(latents, Tensor) else np.asarray(latents, np.float32)
    n = latents.shape[0]
    overlap = max(0, min(overlap, chunk - 1))
    starts = list(range(0, max(1, n - overlap), chunk - overlap))
    video, weight = None, np.zeros(n, np.float32)
    for start in tqdm(starts, desc="decoding", disable=not progress):
        end = min(n, start + chunk)
        frames = model.decode(Tensor(latents[start:end])).asnumpy()
        w = np.ones(end - start, np.float32)
        if start > 0:
            ramp = min(overlap, end - start)
            w[:ramp] = np.arange(1, ramp + 1) / (overlap + 1)
        if end < n:
            w[-overlap:] = np.minimum(w[-overlap:], np.arange(overlap, 0, -1) / (overlap + 1)) if overlap else 1.0
        if video is None:
            video = np.zeros((n,) + frames.shape[1:], np.float32)
        video[start:end] += frames * w[:, None, None, None]
        weight[start:end] += w
        if end == n:
            break
    video /= weight[:, None, None, None]
    return np.clip((video + 1.0) / 2.0, 0.0, 1.0).transpose(0, 2, 3, 1)


def keyframe_guidance(num_frames, min_scale, max_scale):
    """Per-frame guidance of an interpolation window: ``min_scale`` at the keyframes, ``max_scale`` half-way
    between two, linear in the distance to the nearest keyframe."""
    half = KEYFRAME_SPACING / 2
    distance = np.array([min(t % KEYFRAME_SPACING, KEYFRAME_SPACING - t % KEYFRAME_SPACING) for t in range(num_frames)])
    return (min_scale + (max_scale - min_scale) * distance / half).astype(np.float32)


def load_interpolation_pipeline(base_cfg, checkpoint=None, config=None, seed=None):
    """An ImageToVideoPipeline holding a keyframe-interpolation model.

    ``checkpoint``: an interpolation model's weights, or any base model's (SVD, SVD-XT, ours; any layout),
    whose input convolution then grows by the zero-initialised mask channel (an untrained interpolation
    model: it behaves as the base model). ``config``: its config (name or YAML; a base model's config is
    turned into its interpolation variant); by default an interpolation config in configs/ that fits the
    checkpoint, else the variant of ``base_cfg``. Without a checkpoint: seeded random weights (``seed``) of
    the variant of ``config`` or ``base_cfg`` (tests, demos).
    """
    if config is not None:
        cfg = load_config(config)
        if not cfg.model.unet.get("interpolation", False):
            cfg = interpolation_config(cfg)
    elif checkpoint is not None and checkpoint_input_channels(checkpoint, base_cfg.model) == \
            base_cfg.model.unet.in_channels + 1:
        try:
            _, cfg, model = load_pretrained(checkpoint)
        except CheckpointError:
            cfg = None
        if cfg is not None and is_interpolation_model(model):
            return ImageToVideoPipeline(model, SamplingOptions.from_config(cfg.sampling))
        cfg = interpolation_config(base_cfg)
    else:
        cfg = interpolation_config(base_cfg)
    if checkpoint is None:
        model = build_model(cfg, seed=0 if seed is None else seed)
    else:
        model = build_model(cfg, lazy=True)
        load_model_weights(model, checkpoint, cfg.model)
    return ImageToVideoPipeline(model, SamplingOptions.from_config(cfg.sampling))


class LongVideoPipeline:
    """Long videos from an ImageToVideoPipeline (the base model) and, for ``interpolate``, a second one holding a
    keyframe-interpolation model (svd.models.interpolation).

    ``window_frames``: the longest interpolation window (default: the interpolation pipeline's
    ``num_frames``, its trained length; ``(k - 1) * 4 + 1``). ``chunk_frames``: the base model's window for
    keyframes and continuation chunks (default: its ``num_frames``). Both bound every UNet call.
    """

    def __init__(self, pipeline, interpolation=None, window_frames=None, chunk_frames=None):
        self.base = pipeline
        self.interp = interpolation
        if interpolation is not None and not is_interpolation_model(interpolation.model):
            raise ValueError("the interpolation pipeline's model is not an interpolation model "
                             "(its config needs unet.interpolation: true)")
        self.window_frames = window_frames or (interpolation.defaults.num_frames if interpolation else None)
        if self.window_frames is not None:
            keyframe_count(self.window_frames)
        self.chunk_frames = chunk_frames or pipeline.defaults.num_frames

    # ---------------------------------------------------------------- shared pieces

    def _options(self, options, overrides):
        options = self.base.sampling_options(options, **overrides)
        validate(options, self.base.model)
        return options

    def _image(self, image, options, resize_mode):
        pixels = rgb_images(image)
        if len(pixels) != 1:
            raise ValueError(f"a long video starts from one image, got {len(pixels)}")
        return to_model_range(fit_image(pixels[0], options.height, options.width, resize_mode))

    def _latent_shape(self, frames, options):
        down = self.base.model.downscale
        return frames, self.base.model.latent_channels, options.height // down, options.width // down

    @staticmethod
    def _sample_fixed(pipe, conditions, options, noise, known, known_latents, rng, progress, guidance=None):
        """Guided sampling of one window with the frames ``known`` held at ``latents + sigma * noise`` at every
        noise level, and set to ``known_latents`` exactly at the end."""
        sigmas = edm_sigmas(options.num_steps, options.sigma_min, options.sigma_max, options.rho)
        noise = np.array(noise, np.float32)
        known_noise = rng.standard_normal(known_latents.shape).astype(np.float32)
        noise[known] = (known_latents + float(sigmas[0]) * known_noise) / math.sqrt(1.0 + float(sigmas[0]) ** 2)

        def hold(step, sigma, x):
            x = x.asnumpy()
            x[known] = known_latents + float(sigmas[step + 1]) * known_noise
            return Tensor(x)

        x = pipe.sample_latents(conditions, options, noise, progress, hold, guidance).asnumpy()
        x[known] = known_latents
        return x

    # ---------------------------------------------------------------- interpolate

    def plan(self, num_frames, keyframes=None, last_image=False):
        """``(k, L)`` of an interpolate run (interpolation_plan / two_image_plan)."""
        if last_image:
            if keyframes not in (None, 2):
                raise ValueError(f"with --last-image the two images are the keyframes: --keyframes must be 2, "
                                 f"got {keyframes}")
            return 2, two_image_plan(num_frames)
        return interpolation_plan(num_frames, self.chunk_frames, keyframes)

    def interpolate(self, image, num_frames, options=None, *, last_image=None, keyframes=None, generator=None,
                    output_type=None, resize_mode="cover", pass_fps="same", decode_overlap=2, progress=True,
                    **overrides):
        """A ``num_frames = 1 + (k - 1) * 4^L`` video: k keyframes from the base model (or the two images
        ``image`` and ``last_image``), then L interpolation passes.

        ``options``/``overrides`` as ImageToVideoPipeline's (``fps`` is the output frame rate);
        ``pass_fps``: the frame rate each model call is conditioned on: ``same``, ``fps`` throughout (what a
        model trained at one frame rate, like the toy models, knows; the keyframes then move at the pace of
        consecutive frames), or ``scaled``, each pass its own rate, the keyframes ``fps / 4^L`` (physically
        consistent, for models trained over that range of rates). ``generator``: int seed or numpy
        Generator (default ``options.seed``). Returns frames ``(N, H, W, 3)`` in [0, 1] or, with
        ``output_type="latent"``, the latents ``(N, C, h, w)`` (base-model scale).
        """
        if self.interp is None:
            raise ValueError("--long-video interpolate needs an interpolation model (--interp-checkpoint)")
        if pass_fps not in PASS_FPS:
            raise ValueError(f"pass_fps must be one of {PASS_FPS}, got {pass_fps!r}")
        k, passes = self.plan(num_frames, keyframes, last_image is not None)
        options = self._options(options, overrides)
        rng = as_generator(options.seed if generator is None else generator)
        first = self._image(image, options, resize_mode)
        fps_of = (lambda p: options.fps / KEYFRAME_SPACING ** (passes - p)) if pass_fps == "scaled" else \
            (lambda p: options.fps)
        model = self.base.model
        if last_image is not None:
            last = self._image(last_image, options, resize_mode)
            keys = np.concatenate([model.scale_factor * model.condition_latent(Tensor(x)).asnumpy()
                                   for x in (first, last)])
        else:
            key_options = options.updated(num_frames=k, fps=fps_of(0))
            cond_noise = rng.standard_normal(first.shape).astype(np.float32)
            conditions = self.base.conditioning(first, key_options, cond_noise)
            noise = rng.standard_normal(self._latent_shape(k, options)).astype(np.float32)
            keys = self.base.sample_latents(conditions, key_options, noise, progress).asnumpy()
        for p in range(1, passes + 1):
            keys = self.interpolation_pass(keys, options, rng, fps_of(p), first, progress)
        if output_type == "latent":
            return keys
        return decode_windows(model, keys, options.decode_chunk_size, decode_overlap, progress)

    def interpolation_pass(self, keys, options, rng, fps, first_image=None, progress=False):
        """One pass: latents ``(M, C, h, w)`` (base scale) -> ``(4 (M - 1) + 1, C, h, w)`` with ``keys`` at every 4th
        position, bit for bit. Windows of at most ``window_frames`` frames; the CLIP context of a window is its
        first keyframe (``first_image`` for the one starting at frame 0; the others decoded)."""
        keys = np.asarray(keys, np.float32)
        base, interp = self.base.model, self.interp.model
        to_interp = interp.scale_factor / base.scale_factor
        out = np.zeros((frames_for_keyframes(len(keys)),) + keys.shape[1:], np.float32)
        windows = interpolation_windows(len(keys), keyframe_count(self.window_frames))
        aug = options.noise_aug_strength
        vector = interp.vector([fps - 1.0], [options.motion_bucket_id], [aug])
        for first, last in windows:
            window_keys = keys[first:last + 1]
            t = frames_for_keyframes(len(window_keys))
            hint = window_keys / base.scale_factor + aug * rng.standard_normal(window_keys.shape).astype(np.float32)
            concat = Tensor(interpolation_concat(hint, t))
            if first == 0 and first_image is not None:
                pixels = Tensor(first_image)
            else:
                pixels = base.decode(Tensor(window_keys[:1]))
            context = interp.embed_image(pixels)
            repeat = lambda x: ops.repeat_interleave(x, t, 0)
            cond = (concat, repeat(context), repeat(vector))
            uncond = (ops.zeros_like(concat), ops.zeros_like(cond[1]), cond[2])
            window_options = options.updated(num_frames=t)
            noise = rng.standard_normal((t,) + keys.shape[1:]).astype(np.float32)
            guidance = keyframe_guidance(t, options.min_guidance_scale, options.max_guidance_scale)
            known = keyframe_positions(t)
            x = self._sample_fixed(self.interp, (cond, uncond), window_options, noise, known, window_keys * to_interp,
                                   rng, progress, guidance)
            x = x / to_interp
            x[known] = window_keys
            out[first * KEYFRAME_SPACING:last * KEYFRAME_SPACING + 1] = x
        return out

    # ---------------------------------------------------------------- continue

    def continue_video(self, image, num_frames, options=None, *, overlap=2, generator=None, output_type=None,
                       resize_mode="cover", decode_overlap=2, progress=True, **overrides):
        """A ``num_frames`` video in chunks of ``chunk_frames`` (the base model's length), each starting from the
        previous chunk's last ``overlap`` latents (continuation_chunks). Returns frames ``(N, H, W, 3)`` or, with
        ``output_type="latent"``, latents ``(N, C, h, w)``; continuation_seams gives the seam positions."""
        t = self.chunk_frames
        starts = continuation_chunks(num_frames, t, overlap)
        options = self._options(options, overrides)
        rng = as_generator(options.seed if generator is None else generator)
        image = self._image(image, options, resize_mode)
        model = self.base.model
        chunk_options = options.updated(num_frames=t)
        out = np.zeros(self._latent_shape(starts[-1] + t, options), np.float32)
        context = model.embed_image(Tensor(image))
        vector = model.vector([options.fps - 1], [options.motion_bucket_id], [options.noise_aug_strength])
        repeat = lambda x: ops.repeat_interleave(x, t, 0)
        for j, start in enumerate(starts):
            pixels = Tensor(image) if j == 0 else model.decode(Tensor(out[start:start + 1]))
            noisy = pixels + options.noise_aug_strength * Tensor(rng.standard_normal(image.shape).astype(np.float32))
            concat = model.condition_latent(noisy)
            cond = (repeat(concat), repeat(context), repeat(vector))
            uncond = (ops.zeros_like(cond[0]), ops.zeros_like(cond[1]), cond[2])
            noise = rng.standard_normal(self._latent_shape(t, options)).astype(np.float32)
            if j == 0:
                x = self.base.sample_latents((cond, uncond), chunk_options, noise, progress).asnumpy()
            else:
                known = list(range(overlap))
                x = self._sample_fixed(self.base, (cond, uncond), chunk_options, noise, known,
                                       out[start:start + overlap].copy(), rng, progress)
            out[start:start + t] = x
        out = out[:num_frames]
        if output_type == "latent":
            return out
        return decode_windows(model, out, options.decode_chunk_size, decode_overlap, progress)
