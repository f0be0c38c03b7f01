"""The temporal VAE decoder run frame by frame, for inference at full resolution.

``Decoder.construct`` holds every activation as one ``(frames, C, H, W)`` tensor, and at 576x1024 each op of the
top level makes another such tensor (1.2 GB per 4 frames at 128 channels); MindSpore's CPU memory pool keeps the
blocks it grows by, so a 4-frame decode peaked at twice torch's memory. Here the same cells, with the same weights,
see one frame at a time wherever the arithmetic is per frame (spatial ResnetBlocks, the mid-block attention,
upsampling, the output conv), and the temporal parts are computed exactly across frames:

- the temporal ResBlock's GroupNorm statistics span all frames: per-frame group means and variances (on CPU from the
  fused LayerNorm kernel) are combined in float64, then each frame is normalised by the fused batch-norm kernel;
- its (k, 1, 1) temporal convolution is, per output frame, a sum of k channel matmuls of the neighbouring frames,
  whose normalised inputs are computed once each and kept only while a neighbour needs them.

Between blocks only the frames themselves are held, plus one more set of frames inside a temporal block, so peak
memory is about two of the top level's activations instead of several. Results equal ``Decoder.construct`` to
fp32 rounding (tested). PyNative only: graph mode keeps the compiled ``Decoder``.
"""
import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, ops

from svd.models.layers import silu, to_frames, to_video
from svd.models.vae import VideoResnetBlock


def layer_norm_gives_variance():
    """Whether ``ops.LayerNorm``'s third output is the variance: so on CPU (tested); documented as rstd elsewhere."""
    return ms.get_context("device_target") == "CPU"


def frame_group_stats(frame, groups, fused=None):
    """Per-group mean and (biased) variance of one frame ``(1, C, H, W)``, as float64 arrays ``(groups,)``.

    ``fused`` (default: :func:`layer_norm_gives_variance`) reads them off the fused LayerNorm kernel in one pass;
    otherwise they are a mean and a mean of squared deviations (two passes, any backend).
    """
    _, c, h, w = frame.shape
    view = frame.astype(ms.float32).reshape(groups, (c // groups) * h * w)
    if layer_norm_gives_variance() if fused is None else fused:
        ones, zeros = ops.ones(w, ms.float32), ops.zeros(w, ms.float32)
        _, mean, var = ops.LayerNorm(begin_norm_axis=1, begin_params_axis=-1)(view.reshape(groups, -1, w), ones, zeros)
    else:
        mean = mint.mean(view, dim=1, keepdim=True)
        var = mint.mean(mint.square(view - mean), dim=1)
    return mean.asnumpy().reshape(-1).astype(np.float64), var.asnumpy().reshape(-1).astype(np.float64)


def video_group_stats(frames, groups):
    """Group mean and variance over all ``frames`` (equal sizes), combined exactly from per-frame statistics."""
    stats = [frame_group_stats(frame, groups) for frame in frames]
    means = np.stack([m for m, _ in stats])
    variances = np.stack([v for _, v in stats])
    mean = means.mean(axis=0)
    return mean, (variances + (means - mean) ** 2).mean(axis=0)


def channel_stats(norm, mean, var):
    """Group statistics repeated per channel, as the fp32 tensors the batch-norm kernel takes."""
    repeat = norm.weight.shape[0] // norm.num_groups
    return Tensor(np.repeat(mean, repeat).astype(np.float32)), Tensor(np.repeat(var, repeat).astype(np.float32))


def normalise(frame, norm, channel_mean, channel_var):
    """``norm``'s affine GroupNorm of one frame given its per-channel statistics, on the fused batch-norm kernel."""
    out = ops.batch_norm(frame.astype(ms.float32), channel_mean, channel_var, norm.weight, norm.bias, False, 0.1,
                         norm.eps)
    return out.astype(frame.dtype)


def temporal_conv_frames(conv, source, count):
    """Yield ``conv`` (a :class:`svd.models.layers.TemporalConv`) over ``count`` frames, one output frame at a time;
    ``source(t)`` gives input frame ``t`` and is called once per frame. Zero padding at both ends, as the conv."""
    pad = conv.pad
    weight = conv.weight
    taps = [weight[:, :, j, 0, 0] for j in range(weight.shape[2])]
    bias = conv.bias.reshape(-1, 1)
    window = {}
    for t in range(count):
        for s in range(max(0, t - pad), min(count, t + pad + 1)):
            if s not in window:
                window[s] = source(s)
        for s in [s for s in window if s < t - pad]:
            del window[s]
        _, c, h, w = window[t].shape
        out = None
        for j, tap in enumerate(taps):
            s = t + j - pad
            if 0 <= s < count:
                term = mint.matmul(tap.astype(window[s].dtype), window[s].reshape(c, h * w))
                out = term if out is None else out + term
        yield (out + bias.astype(out.dtype)).reshape(1, -1, h, w)


def norm_silu_source(norm, frames):
    """``source(t)`` for :func:`temporal_conv_frames`: SiLU of ``norm`` applied with statistics over all frames."""
    stats = channel_stats(norm, *video_group_stats(frames, norm.num_groups))
    return lambda t: silu(normalise(frames[t], norm, *stats))


def temporal_block(block, frames):
    """The temporal half of a VideoResnetBlock on ``frames`` in place: ``block.blend(x, x + h)``."""
    stack = block.time_stack
    assert not stack.has_skip_conv and not stack.use_emb, "the VAE's temporal ResBlock has neither"
    count = len(frames)
    norm_in, conv_in = stack.in_layers[0], stack.in_layers[2]
    norm_out, conv_out = stack.out_layers[0], stack.out_layers[3]
    hidden = list(temporal_conv_frames(conv_in, norm_silu_source(norm_in, frames), count))
    source = norm_silu_source(norm_out, hidden)

    def release_after_use(t):
        out = source(t)
        hidden[t] = None
        return out

    for t, h in enumerate(temporal_conv_frames(conv_out, release_after_use, count)):
        frames[t] = block.blend(frames[t], frames[t] + h)


def per_frame(fn, frames):
    """Replace each frame by ``fn(frame)``, so only one frame's temporaries are alive at a time."""
    for t, frame in enumerate(frames):
        frames[t] = fn(frame)


def run_block(block, frames):
    per_frame(block._residual, frames)
    if isinstance(block, VideoResnetBlock):
        temporal_block(block, frames)


def decode_frame_by_frame(decoder, z):
    """``decoder(z, z.shape[0])`` for one video's latents ``(T, C, h, w)``, at the memory of a few frames."""
    frames = [decoder.conv_in(z[t:t + 1]) for t in range(z.shape[0])]
    mid = decoder.mid
    run_block(mid.block_1, frames)
    per_frame(lambda frame: mid.attn_1(frame, 1), frames)
    run_block(mid.block_2, frames)
    for i in range(decoder.num_levels - 1, -1, -1):
        level = decoder.up[i]
        for block in level.block:
            run_block(block, frames)
        if level.has_up:
            per_frame(level.upsample, frames)
    per_frame(lambda frame: silu(decoder.norm_out(frame)), frames)
    if not decoder.temporal:
        return ops.cat([decoder.conv_out(frame) for frame in frames], axis=0)
    per_frame(decoder.conv_out.spatial, frames)
    return to_frames(decoder.conv_out.time_mix_conv(to_video(ops.cat(frames, axis=0), len(frames))))
