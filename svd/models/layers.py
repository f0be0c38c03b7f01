"""Small building blocks shared by the UNet, the VAE and the CLIP tower.

Norms keep parameters named ``weight``/``bias`` so MindSpore names line up with
the PyTorch checkpoints, and they always compute in float32.
"""
import functools
import math

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import Constant, One, Uniform, Zero, initializer


def uniform_parameter(shape, fan_in, name):
    """PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)); lazily materialised by MindSpore."""
    return Parameter(initializer(Uniform(1.0 / math.sqrt(fan_in)), shape, ms.float32), name=name)


class GroupNorm(nn.Cell):
    """GroupNorm over any rank (4-D images, 5-D videos) on the fused kernel, computed in fp32.

    The fused kernel is exact to 1e-6 and about 5x faster on CPU than the same
    statistics written as separate mean/variance ops.
    """

    def __init__(self, num_channels, num_groups=32, eps=1e-5):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels are not divisible into {num_groups} groups")
        self.num_groups = num_groups
        self.eps = eps
        self.weight = Parameter(initializer(One(), (num_channels,), ms.float32), name="weight")
        self.bias = Parameter(initializer(Zero(), (num_channels,), ms.float32), name="bias")

    def construct(self, x):
        h = ops.group_norm(x.astype(ms.float32), self.num_groups, self.weight, self.bias, self.eps)
        return h.astype(x.dtype)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis on the fused kernel in fp32 (eps 1e-5 as in PyTorch, not MindSpore's 1e-7)."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(initializer(One(), (dim,), ms.float32), name="weight")
        self.bias = Parameter(initializer(Zero(), (dim,), ms.float32), name="bias")
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)

    def construct(self, x):
        return self.norm(x.astype(ms.float32), self.weight, self.bias)[0].astype(x.dtype)


def silu(x):
    """SiLU on MindSpore's fused kernel (2x faster on CPU than ``ops.silu``)."""
    return mint.nn.functional.silu(x)


class SiLU(nn.Cell):
    """Cell form of :func:`silu`, for ``SequentialCell`` slots."""

    def construct(self, x):
        return silu(x)


# GELU(x) = x * Phi(x) = x * sigmoid(x * Q(x^2)): Q is a degree-6 polynomial fitted in float64
# (weighted least squares, weights x * Phi * (1 - Phi)) to logit(Phi(x)) / x on [0, 6.5]. Beyond that
# Q keeps growing, so the sigmoid saturates as Phi does. Error against the float64 GELU at most
# 5e-7 anywhere in fp32, one rounding step at the worst point, like an erf kernel's.
GELU_LOGIT_POLY = (1.5957698830106573, 0.07266616867792593, -6.518934890976106e-05, -0.00011061267563055991,
                   7.929547943487294e-06, -2.6453185328172146e-07, 3.5124973207789623e-09)


def erf_gelu_is_fast():
    """Whether the backend's erf GELU kernel should be used (anything but the CPU backend)."""
    return ms.get_context("device_target") != "CPU"


def gelu(x, use_kernel=False):
    """Exact (erf) GELU, computed in fp32.

    MindSpore's CPU erf kernel is ~25x slower than its sigmoid, which made GELU 20% of a
    full-size UNet call; there the polynomial-logit form above runs in cheap ops instead.
    ``use_kernel`` (from :func:`erf_gelu_is_fast`, decided when a cell is built) picks the kernel.
    """
    h = x.astype(ms.float32)
    if use_kernel:
        return ops.gelu(h, approximate="none").astype(x.dtype)
    square = h * h
    poly = square * GELU_LOGIT_POLY[-1] + GELU_LOGIT_POLY[-2]
    for coefficient in GELU_LOGIT_POLY[-3::-1]:
        poly = poly * square + coefficient
    return (h * ops.sigmoid(h * poly)).astype(x.dtype)


# Frequencies are split into a head of FREQUENCY_HEAD_BITS significant bits and a float32 tail, so that an
# integer timestep below 2**(24 - FREQUENCY_HEAD_BITS) = 4096 times the head is exact in float32.
FREQUENCY_HEAD_BITS = 12


@functools.lru_cache(maxsize=None)
def frequency_turns(half, max_period):
    """``exp(-ln(max_period) k / half) / 2pi`` (turns per unit) in float64, as float32 head and tail arrays."""
    turns = np.exp(-math.log(max_period) * np.arange(half, dtype=np.float64) / half) / (2.0 * math.pi)
    mantissa, exponent = np.frexp(turns)
    head = np.ldexp(np.round(mantissa * 2.0 ** FREQUENCY_HEAD_BITS), exponent - FREQUENCY_HEAD_BITS)
    return head.astype(np.float32), (turns - head).astype(np.float32)


def timestep_embedding(t, dim, max_period=10000.0):
    """Sinusoidal embedding, cos half first; used for noise level, micro-conditions and frame index.

    ``cos(t f)`` straight in float32 is off by up to 2e-3 at t = 1000: ``t f`` itself is rounded to
    float32 (6e-5 at 1000) and so is ``f``. Here the angle is reduced exactly to a fraction of a turn
    first: t = whole + frac, ``whole * head`` is an exact product whose integer part is dropped, and the
    small remaining terms carry float32 rounding only. Max error against float64 is 5e-7 for
    |t| <= 1000 (tested); host-side constants, so it compiles in graph mode.
    """
    half = dim // 2
    head, tail = frequency_turns(half, float(max_period))
    head, tail = Tensor(head).reshape(1, half), Tensor(tail).reshape(1, half)
    t = t.astype(ms.float32).reshape(-1, 1)
    whole = ops.floor(t)
    exact = whole * head
    turns = (exact - ops.round(exact)) + (whole * tail + (t - whole) * (head + tail))
    angle = turns * (2.0 * math.pi)
    emb = ops.cat((ops.cos(angle), ops.sin(angle)), axis=-1)
    if dim % 2:
        emb = ops.cat((emb, ops.zeros((emb.shape[0], 1), ms.float32)), axis=-1)
    return emb


def conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=None, has_bias=True):
    """Conv2d with PyTorch-style zero padding: 'same' for odd kernels by default, an int, or
    (top, bottom, left, right)."""
    padding = kernel_size // 2 if padding is None else padding
    if padding == 0:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="valid", has_bias=has_bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad", padding=padding,
                     has_bias=has_bias)


class TemporalConv(nn.Cell):
    """Conv3d with a (k, 1, 1) kernel over ``b c t h w``, run as a Conv2d over ``(t, h*w)``.

    The weight keeps the 5-D PyTorch shape so checkpoints map one to one; the 2-D
    form avoids Conv3d, which is slow on CPU and fp16-only on some Ascend stacks.
    """

    def __init__(self, in_channels, out_channels, kernel_size=(3, 1, 1)):
        super().__init__()
        kt, kh, kw = kernel_size
        if kh != 1 or kw != 1 or kt % 2 == 0:
            raise ValueError(f"video_kernel_size must be [odd, 1, 1], got {list(kernel_size)}")
        self.pad = kt // 2
        self.weight = uniform_parameter((out_channels, in_channels, kt, 1, 1), in_channels * kt, "weight")
        self.bias = uniform_parameter((out_channels,), in_channels * kt, "bias")

    def construct(self, x):
        b, c, t, h, w = x.shape
        weight = self.weight.astype(x.dtype)
        kernel = weight.reshape(weight.shape[0], weight.shape[1], weight.shape[2], 1)
        y = ops.conv2d(x.reshape(b, c, t, h * w), kernel, self.bias.astype(x.dtype), pad_mode="pad",
                       padding=(self.pad, 0))
        return y.reshape(b, -1, t, h, w)


def upsample_nearest_2x(x):
    """Exact nearest-neighbour x2 upsampling of a 4-D tensor, in one kernel and one output buffer."""
    return mint.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")


def to_video(x, num_frames):
    """``(b t) c h w`` -> ``b c t h w``."""
    bt, c, h, w = x.shape
    return x.reshape(bt // num_frames, num_frames, c, h, w).transpose(0, 2, 1, 3, 4)


def to_frames(x):
    """``b c t h w`` -> ``(b t) c h w``."""
    b, c, t, h, w = x.shape
    return x.transpose(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


class AlphaBlender(nn.Cell):
    """Learned blend ``alpha * x_spatial + (1 - alpha) * x_temporal``, alpha = sigmoid(mix_factor).

    Both inputs are in frame layout, one row per frame (``(b t) ...``). ``with_images``: frames flagged
    by ``image_only_indicator`` take the spatial branch only (alpha 1), so image and video samples can
    share a batch. The per-frame alpha is written out to the full shape first (expand_to), because
    MindSpore's CPU kernels are slow on broadcasting operands.
    """

    def __init__(self, merge_factor=0.5, with_images=True):
        super().__init__()
        self.with_images = with_images
        self.mix_factor = Parameter(initializer(Constant(merge_factor), (1,), ms.float32), name="mix_factor")

    def construct(self, x_spatial, x_temporal, image_only_indicator=None):
        alpha = ops.sigmoid(self.mix_factor)
        rows = x_spatial.shape[0]
        if self.with_images:
            alpha = ops.where(image_only_indicator > 0.5, ops.ones_like(image_only_indicator),
                              ops.broadcast_to(alpha, image_only_indicator.shape).astype(image_only_indicator.dtype))
        else:
            alpha = ops.broadcast_to(alpha, (rows,))
        alpha = alpha.reshape(rows, 1).astype(x_spatial.dtype)
        flat = (rows, math.prod(x_spatial.shape[1:]))
        blended = x_spatial.reshape(flat) * expand_to(alpha, flat, after=x_temporal)
        blended = blended + x_temporal.reshape(flat) * expand_to(1.0 - alpha, flat, after=blended)
        return blended.reshape(x_spatial.shape)


def expand_to(t, shape, after=None):
    """``t`` broadcast to ``shape`` and written out, by matmuls with ones (exact: every product is 1 * t).

    MindSpore's CPU elementwise kernels are ~10x slower when an operand broadcasts (a bias added
    over a (4, 2880, 640) activation: 36 ms, against 4 ms for equal shapes) and ``broadcast_to`` is as
    slow; a rank-1 matmul writes the same tensor in about 1 ms. Each run of broadcast axes costs one
    matmul, so callers flatten to a single run where they can.

    ``after``: the activation the result is combined with. A compiled graph may otherwise write the
    tensor out as soon as ``t`` exists (often at the start of the network, ``t`` being a weight or an
    embedding) and hold it until use: every block's copy at once (see :func:`not_before`).
    """
    shape = tuple(shape)
    if after is not None:
        t = not_before(t, after)
    t = t.reshape((1,) * (len(shape) - t.ndim) + tuple(t.shape))
    for axis in reversed(range(len(shape))):
        if t.shape[axis] != 1 or shape[axis] == 1:
            continue
        outer = math.prod(t.shape[:axis])
        inner = math.prod(t.shape[axis + 1:])
        if inner == 1:
            written = ops.matmul(t.reshape(outer, 1), ops.ones((1, shape[axis]), t.dtype))
        else:
            written = ops.BatchMatMul()(ops.ones((outer, shape[axis], 1), t.dtype), t.reshape(outer, 1, inner))
        t = written.reshape(t.shape[:axis] + (shape[axis],) + t.shape[axis + 1:])
    return t


def not_before(t, *tensors):
    """``t``, computed in a compiled graph only once ``tensors`` are (a no-op in PyNative).

    A graph runs an op as early as its inputs allow; ops on weights or embeddings alone (a weight's
    slice, a written-out bias, the next chunk of a chunked loop) would all run at the start and stay
    resident together. Measured on the full-size UNet in graph mode, that was most of its memory
    above PyNative's.
    """
    for other in tensors:
        t = ops.depend(t, other)
    return t


def add_channel_bias(x, bias):
    """``x + bias`` for a bias over the leading axes of ``x`` (``(N, C)`` on ``(N, C, H, W)``), in one pass.

    The bias-add kernel treats ``x`` as ``(1, N*C, H*W)``; a broadcasting add is ~7x slower on CPU.
    With one value per channel (H*W = 1) the shapes are equal already (and BiasAddGrad rejects a
    last axis of 1).
    """
    leading = math.prod(bias.shape)
    if x.size == leading:
        return x + bias.reshape(x.shape)
    return ops.bias_add(x.reshape(1, leading, -1), bias.reshape(-1)).reshape(x.shape)
