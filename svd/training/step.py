"""Training: the EDM loss, the autoencoder loss, a graph-mode train step, the LR schedule and batches.

Every random number of a step (clip choice and start, sigma, noises, noise augmentation) is a
pure function of ``(seed, step, rank)``, drawn on the host; together with the saved optimizer,
accumulation and loss-scale state this makes a resumed run continue exactly.
"""
import math
import re

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops

from svd.data import epoch_order
from svd.models.clip import resize_operators
from svd.models.interpolation import KEYFRAME_SPACING, keyframe_count
from svd.models.lora import is_lora_parameter
from svd.models.svd_model import micro_conditioning
from svd.sampling.diffusion import append_dims

TEMPORAL_PARAMETER = re.compile(r"(^|\.)(time_stack|time_mixer|time_pos_embed)\.")
# What each `train.trainable` choice trains; everything else is frozen. "vae" and "vae_decoder" select the
# autoencoder loss (AUTOENCODER_CHOICES).
TRAINABLE = {
    "temporal": lambda name: name.startswith("unet.") and bool(TEMPORAL_PARAMETER.search(name)),
    "unet": lambda name: name.startswith("unet."),
    "unet+image_encoder": lambda name: name.startswith(("unet.", "image_encoder.")),
    "vae": lambda name: name.startswith("vae."),
    "vae_decoder": lambda name: name.startswith("vae.decoder."),  # the latent space (encoder) stays as it is
    "lora": is_lora_parameter,  # the adapters train.py adds from the `lora` section (svd.models.lora)
}
# The keyframe-interpolation model (svd.models.interpolation) from base weights: the temporal layers and the input
# convolution, whose mask-channel weights start at zero.
TRAINABLE["interpolation"] = lambda name: TRAINABLE["temporal"](name) or name.startswith("unet.input_blocks.0.0.")


AUTOENCODER_CHOICES = ("vae", "vae_decoder")


def select_trainable(model, trainable="temporal"):
    """Freeze all but the parameters ``trainable`` names (a key of TRAINABLE); returns the trainable list."""
    if trainable not in TRAINABLE:
        raise ValueError(f"train.trainable must be one of {sorted(TRAINABLE)}, got '{trainable}'")
    chosen = []
    for param in model.get_parameters():
        param.requires_grad = TRAINABLE[trainable](param.name)
        if param.requires_grad:
            chosen.append(param)
    if not chosen:
        raise ValueError(f"train.trainable '{trainable}' selects no parameter of this model")
    return chosen


def cosine_schedule(base_lr, end_lr, warmup_steps, total_steps):
    """Per-optimizer-step learning rates: linear warmup, then cosine decay to ``end_lr``."""
    rates = []
    for step in range(total_steps):
        if step < warmup_steps:
            rates.append(base_lr * (step + 1) / warmup_steps)
        else:
            progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
            rates.append(end_lr + 0.5 * (base_lr - end_lr) * (1.0 + math.cos(math.pi * progress)))
    return rates


class DiffusionLoss(nn.Cell):
    """EDM v-weighted denoising loss of SVD with one noise level per clip.

    The VAE runs frozen inside the step (latent targets from a posterior sample x scale_factor,
    conditioning latent from the posterior mode of the noise-augmented first frame). The CLIP tower
    is frozen too unless ``train_image_encoder`` (a toy model trains its small tower jointly).
    ``keep_cond`` (one 0/1 per clip) drops the image conditioning, context and latent together, as
    the sampler's unconditional branch does, so classifier-free guidance has something to contrast.
    ``first_frame_weight``: frame 0's share of each clip's loss relative to one other frame (1 is SVD's plain
    mean over frames); a small model trained briefly learns to reproduce the conditioning frame sooner with more.
    It is for the image-to-video loss only (train.py refuses it for the interpolation model's).
    """

    def __init__(self, model, height, width, train_image_encoder=False, first_frame_weight=1.0):
        super().__init__(auto_prefix=False)
        self.model = model
        self.first_frame_weight = first_frame_weight
        self.dim = model.micro_cond_dim
        self.scale_factor = model.scale_factor
        self.resize = resize_operators(height, width, model.image_encoder.image_size)
        self.train_image_encoder = train_image_encoder

    def targets(self, frames, latent_noise):
        """Scaled latent targets ``(b t, C, h, w)``: a posterior sample of every frame, no gradient."""
        b, t, c, h, w = frames.shape
        mean, logvar = self.model.vae.encode_moments(frames.reshape(b * t, c, h, w))
        return ops.stop_gradient(self.scale_factor * (mean + ops.exp(0.5 * logvar) * latent_noise))

    def context(self, first, keep_cond):
        """CLIP context of the first frames, dropped where ``keep_cond`` is 0."""
        context = self.model.embed_image(first, self.resize)
        if not self.train_image_encoder:
            context = ops.stop_gradient(context)
        return context * keep_cond.reshape(-1, 1, 1)

    def weighted_error(self, x0, x_concat, context, vector, sigma, noise, b, t):
        """The v-weighted squared error of the denoiser on ``x0 + sigma noise`` (one sigma per clip)."""
        x_noisy = x0 + append_dims(sigma, 4) * noise
        denoised = self.model.denoise(x_noisy, sigma, x_concat, ops.repeat_interleave(context, t, 0),
                                      ops.repeat_interleave(vector, t, 0), ops.zeros((b, t), ms.float32))
        weight = (sigma ** 2 + 1.0) / sigma ** 2
        error = weight * ops.square(denoised - x0).mean(axis=(1, 2, 3))
        if self.first_frame_weight == 1.0:
            return error.mean()
        error = error.reshape(b, t)
        total = self.first_frame_weight * error[:, 0] + error[:, 1:].sum(axis=1)
        return (total / (self.first_frame_weight + t - 1)).mean()

    def construct(self, frames, fps_id, motion_bucket_id, cond_aug, cond_noise, sigma, noise, latent_noise,
                  keep_cond):
        b, t = frames.shape[:2]
        x0 = self.targets(frames, latent_noise)
        first = frames[:, 0]
        concat = ops.stop_gradient(self.model.condition_latent(first + cond_aug.reshape(b, 1, 1, 1) * cond_noise))
        concat = concat * keep_cond.reshape(b, 1, 1, 1)
        vector = micro_conditioning(fps_id, motion_bucket_id, cond_aug, self.dim)
        return self.weighted_error(x0, ops.repeat_interleave(concat, t, 0), self.context(first, keep_cond), vector,
                                   sigma, noise, b, t)


class InterpolationLoss(DiffusionLoss):
    """EDM loss of the keyframe-interpolation model (svd.models.interpolation) on a real window of ``(k - 1) * 4 + 1``
    frames: the target is the whole window, the conditioning its keyframes (every 4th frame).

    Inputs as DiffusionLoss's, except that ``key_noise`` ``(b, k, C, h, w)`` takes the place of the pixel
    noise of the conditioning frame: each keyframe's conditioning latent is its unscaled target latent plus
    ``cond_aug`` times that noise (augmentation in latent space, as sampling applies it to generated
    keyframes). The concat input is each frame's nearest keyframe latent plus the mask channel; the CLIP
    context is the window's first frame. ``keep_cond`` drops keyframe latents, mask and context together.
    """

    def construct(self, frames, fps_id, motion_bucket_id, cond_aug, key_noise, sigma, noise, latent_noise,
                  keep_cond):
        b, t = frames.shape[:2]
        x0 = self.targets(frames, latent_noise)
        latents = x0.reshape((b, t) + x0.shape[1:])
        keys = latents[:, ::KEYFRAME_SPACING] / self.scale_factor + cond_aug.reshape(b, 1, 1, 1, 1) * key_noise
        positions = ops.arange(0, t, dtype=ms.int32)
        hint = ops.gather(keys, (positions + (KEYFRAME_SPACING - 1) // 2) // KEYFRAME_SPACING, 1)
        mask = (positions % KEYFRAME_SPACING == 0).astype(ms.float32).reshape(1, t, 1, 1, 1)
        mask = ops.broadcast_to(mask, (b, t, 1) + x0.shape[2:])
        concat = ops.cat((hint, mask), axis=2) * keep_cond.reshape(b, 1, 1, 1, 1)
        vector = micro_conditioning(fps_id, motion_bucket_id, cond_aug, self.dim)
        return self.weighted_error(x0, concat.reshape((b * t,) + concat.shape[2:]),
                                   self.context(frames[:, 0], keep_cond), vector, sigma, noise, b, t)


class AutoencoderLoss(nn.Cell):
    """KL autoencoder objective: pixel MSE of the temporal decoder's reconstruction plus a KL term.

    The decoder sees each clip as one frame sequence, so its temporal layers learn on real motion.
    ``kl_weight`` has the meaning of Stable Diffusion's 1e-6: the KL summed over a frame's latent
    relative to the squared error summed over its pixels. Takes the diffusion step's inputs and
    uses only the frames and the posterior noise.
    """

    def __init__(self, model, kl_weight=1e-6):
        super().__init__(auto_prefix=False)
        self.vae = model.vae
        self.kl_weight = kl_weight

    def construct(self, frames, fps_id, motion_bucket_id, cond_aug, cond_noise, sigma, noise, latent_noise,
                  keep_cond):
        b, t, c, h, w = frames.shape
        pixels = frames.reshape(b * t, c, h, w)
        mean, logvar = self.vae.encode_moments(pixels)
        z = mean + ops.exp(0.5 * logvar) * latent_noise
        reconstruction = self.vae.decode(z, t)
        mse = ops.square(reconstruction - pixels).mean()
        kl = 0.5 * (ops.square(mean) + ops.exp(logvar) - 1.0 - logvar).sum(axis=(1, 2, 3)).mean()
        return mse + self.kl_weight * kl / (c * h * w)


class CompiledLoss(nn.Cell):
    """A loss net whose forward, and so its backward, runs as one compiled graph inside a PyNative step.

    At toy width a PyNative step is bound by per-op dispatch (a toy UNet step 5.8 s, 3.3 s compiled; the
    toy autoencoder 1.3 s, 0.9 s), while compiling the whole step with its optimizer takes too long on
    MindSpore 2.10's CPU backend. The update, clipping and EMA stay eager.
    """

    def __init__(self, loss_net, jit_level="O0"):
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net
        self.compiled_forward = ms.jit(self.loss_net.construct, jit_level=jit_level)

    def construct(self, *inputs):
        return self.compiled_forward(*inputs)


def global_norm(grads):
    """``sqrt(sum of squares)`` over all gradients as the norm of the per-tensor norms: one kernel per
    tensor (a per-tensor square/sum/cast chain is most of a small model's PyNative step). It is inf or
    NaN exactly when some gradient is, or when the norm exceeds float32 (a step to skip either way)."""
    return ops.norm(ops.stack([ops.norm(g) for g in grads]))


class TrainStep(nn.Cell):
    """Loss-scaled gradients, accumulation, all-reduce, global-norm clipping, AdamW, EMA.

    The optimizer runs every ``accumulation_steps`` calls and is skipped when any gradient in the
    window overflowed; the dynamic loss scale halves on overflow and doubles after
    ``scale_window`` clean steps.

    Two equivalent forms: in PyNative without accumulation the gradients go straight to the update
    (``direct``: one norm kernel per gradient for the overflow check and clipping, no accumulator
    copies; a small model's step spent a quarter of its time in those per-tensor op chains). Graph
    mode, and accumulation, go through accumulator parameters: a compiled branch that consumes the
    gradients themselves made MindSpore 2.10's CPU compile of the tiny train step grow past 22 GB.
    """

    def __init__(self, loss_net, optimizer, accumulation_steps=1, clip_norm=0.0, loss_scale=1.0,
                 dynamic_loss_scale=False, scale_factor=2.0, scale_window=1000, ema_decay=0.0, distributed=False):
        super().__init__(auto_prefix=False)
        self.loss_net = loss_net
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad = ops.GradOperation(get_by_list=True, sens_param=True)
        self.accumulation_steps = accumulation_steps
        self.direct = accumulation_steps == 1 and ms.get_context("mode") == ms.PYNATIVE_MODE
        if self.direct:
            self.value_and_grad = ms.value_and_grad(self._scaled_loss, None, self.weights, has_aux=True)
        if not self.direct:
            self.accumulated = self.weights.clone(prefix="accumulated", init="zeros")
        self.micro_step = Parameter(Tensor(0, ms.int32), name="micro_step", requires_grad=False)
        self.window_overflow = Parameter(Tensor(0.0, ms.float32), name="window_overflow", requires_grad=False)
        self.loss_scale = Parameter(Tensor(loss_scale, ms.float32), name="loss_scale", requires_grad=False)
        self.clean_steps = Parameter(Tensor(0, ms.int32), name="clean_steps", requires_grad=False)
        self.dynamic_loss_scale = dynamic_loss_scale
        self.unit_scale = loss_scale == 1.0 and not dynamic_loss_scale  # gradients need no unscaling
        self.scale_factor = scale_factor
        self.scale_window = scale_window
        self.clip_norm = clip_norm
        self.ema_decay = ema_decay
        if ema_decay > 0:
            self.ema = self.weights.clone(prefix="ema")
        self.distributed = distributed
        if distributed:
            self.reducer = nn.DistributedGradReducer(self.weights)

    def _update_loss_scale(self, overflow):
        clean = ops.select(overflow, ops.zeros_like(self.clean_steps), self.clean_steps + 1)
        grow = clean >= self.scale_window
        scale = ops.select(overflow, ops.maximum(self.loss_scale / self.scale_factor, 1.0),
                           ops.select(grow, self.loss_scale * self.scale_factor, self.loss_scale))
        ops.assign(self.clean_steps, ops.select(grow, ops.zeros_like(clean), clean))
        return ops.assign(self.loss_scale, scale)

    def _update_ema(self, updated):
        if self.ema_decay > 0:
            for ema, weight in zip(self.ema, self.weights):
                if self.direct:  # one kernel instead of three
                    average = mint.lerp(ema, weight, 1.0 - self.ema_decay)
                else:
                    average = ema * self.ema_decay + weight * (1.0 - self.ema_decay)
                updated = ops.depend(updated, ops.assign(ema, average))
        return updated

    def _apply_accumulated(self):
        grads = tuple(self.accumulated)
        if self.clip_norm > 0:
            grads = ops.clip_by_global_norm(grads, self.clip_norm)
        return self._update_ema(self.optimizer(grads))

    def _apply_direct(self, grads, norm):
        """The update from this step's (loss-scaled) gradients whose global norm is ``norm``."""
        if self.clip_norm > 0 or not self.unit_scale:
            factor = 1.0 / self.loss_scale
            if self.clip_norm > 0:
                factor = factor * self.clip_norm / ops.maximum(norm * factor, self.clip_norm)
            grads = tuple(g * factor for g in grads)
        return self._update_ema(self.optimizer(grads))

    def _scaled_loss(self, *inputs):
        """The loss times the loss scale (what is differentiated) and the loss itself."""
        loss = self.loss_net(*inputs)
        return loss * self.loss_scale.astype(loss.dtype), loss

    def construct(self, *inputs):
        if self.direct:  # one forward pass: PyNative would run it twice for the loss and then the gradients
            (_, loss), grads = self.value_and_grad(*inputs)
        else:
            loss = self.loss_net(*inputs)
            sens = ops.ones_like(loss) * self.loss_scale.astype(loss.dtype)
            grads = self.grad(self.loss_net, self.weights)(*inputs, sens)
        if self.distributed:
            grads = self.reducer(grads)
        if self.direct:
            loss = ops.depend(loss, ops.assign_add(self.micro_step, Tensor(1, ms.int32)))
            norm = global_norm(grads)
            overflow = ops.logical_not(ops.isfinite(norm))
            if not overflow:
                loss = ops.depend(loss, self._apply_direct(grads, norm))
        else:
            finite = ops.stack([ops.isfinite(g).all() for g in grads]).all()
            overflow = ops.logical_not(finite)
            inverse = 1.0 / (self.loss_scale * self.accumulation_steps)
            for acc, g in zip(self.accumulated, grads):
                loss = ops.depend(loss, ops.assign_add(acc, ops.select(finite, g * inverse, ops.zeros_like(g))))
            loss = ops.depend(loss, ops.assign(self.window_overflow,
                                               ops.maximum(self.window_overflow, overflow.astype(ms.float32))))
            loss = ops.depend(loss, ops.assign_add(self.micro_step, Tensor(1, ms.int32)))
            if self.micro_step % self.accumulation_steps == 0:
                if self.window_overflow < 0.5:
                    loss = ops.depend(loss, self._apply_accumulated())
                for acc in self.accumulated:
                    loss = ops.depend(loss, ops.assign(acc, ops.zeros_like(acc)))
                loss = ops.depend(loss, ops.assign(self.window_overflow, Tensor(0.0, ms.float32)))
        if self.dynamic_loss_scale:
            loss = ops.depend(loss, self._update_loss_scale(overflow))
        return loss, overflow, self.loss_scale


def step_inputs(clips, step, batch_size, seed, rank, world_size, noise_cfg, latent_channels, downscale,
                cond_dropout=0.0):
    """All inputs of one training step as numpy arrays, in DiffusionLoss argument order."""
    samples = []
    for i in range(batch_size):
        k = (step * world_size + rank) * batch_size + i
        epoch, position = divmod(k, len(clips))
        index = int(epoch_order(len(clips), seed, epoch)[position])
        samples.append(clips.clip(index, np.random.default_rng([seed, k, 0])))
    frames = np.stack([s["frames"] for s in samples])
    b, t, _, h, w = frames.shape
    rng = np.random.default_rng([seed, step, rank, 1])
    cond_aug = np.exp(noise_cfg["cond_aug_mean"] + noise_cfg["cond_aug_std"] * rng.standard_normal(b))
    sigma = np.exp(noise_cfg["p_mean"] + noise_cfg["p_std"] * rng.standard_normal(b))
    latent_shape = (b * t, latent_channels, h // downscale, w // downscale)
    return (frames, np.array([s["fps_id"] for s in samples], np.float32),
            np.array([s["motion_bucket_id"] for s in samples], np.float32), cond_aug.astype(np.float32),
            rng.standard_normal((b, 3, h, w)).astype(np.float32), np.repeat(sigma, t).astype(np.float32),
            rng.standard_normal(latent_shape).astype(np.float32), rng.standard_normal(latent_shape).astype(np.float32),
            (rng.random(b) >= cond_dropout).astype(np.float32))


def interpolation_step_inputs(clips, step, batch_size, seed, rank, world_size, noise_cfg, latent_channels, downscale,
                              cond_dropout=0.0, min_keyframes=None):
    """Inputs of one InterpolationLoss step: step_inputs' (the same draws), with the keyframe noise
    ``(b, k, C, h, w)`` in the place of the conditioning frame's pixel noise.

    The clips are windows of ``(k - 1) * 4 + 1`` real frames (``data.num_frames``, e.g. 17: 5 keyframes).
    ``min_keyframes`` (2 <= m < k) trains on windows of a random ``m..k`` keyframes, cut from the window's
    start, so shorter windows (a last window, a two-image in-between) are in distribution too.
    """
    inputs = list(step_inputs(clips, step, batch_size, seed, rank, world_size, noise_cfg, latent_channels,
                              downscale, cond_dropout))
    frames = inputs[0]
    b, t, _, h, w = frames.shape
    keys = keyframe_count(t)
    rng = np.random.default_rng([seed, step, rank, 2])
    if min_keyframes is not None and not 2 <= min_keyframes <= keys:
        raise ValueError(f"interpolation.min_keyframes must be in 2..{keys} (the keyframes of data.num_frames={t}), "
                         f"got {min_keyframes}")
    if min_keyframes is not None and min_keyframes < keys:
        keys = int(rng.integers(min_keyframes, keys + 1))
        frames_kept = (keys - 1) * KEYFRAME_SPACING + 1
        inputs[0] = np.ascontiguousarray(frames[:, :frames_kept])
        for i in (5, 6, 7):  # sigma, noise, posterior noise: one row per frame
            rows = inputs[i].reshape((b, t) + inputs[i].shape[1:])[:, :frames_kept]
            inputs[i] = np.ascontiguousarray(rows.reshape((b * frames_kept,) + rows.shape[2:]))
    inputs[4] = rng.standard_normal((b, keys, latent_channels, h // downscale, w // downscale)).astype(np.float32)
    return tuple(inputs)


def latent_scale(model, clips, count=32, seed=0):
    """``1 / std`` of the VAE's posterior means over the first ``count`` clips: the latent scale factor
    that gives diffusion unit-variance targets (0.18215 for Stable Diffusion's VAE; a new VAE needs its own)."""
    values = []
    for index in range(min(count, len(clips))):
        frames = clips.clip(index, np.random.default_rng([seed, index]))["frames"]
        mean, _ = model.vae.encode_moments(Tensor(frames))
        values.append(mean.asnumpy().astype(np.float64).ravel())
    return float(1.0 / np.concatenate(values).std())
