"""Anti-aliased bicubic resize as two matrix products.

Gaussian blur (reflect padding, sigma = (scale - 1) / 2) followed by bicubic
interpolation with aligned corners is linear and separable, so each axis is one
dense matrix built once in float64. This reproduces the CLIP preprocessing of
the reference pipelines exactly, on any backend.
"""
import functools

import numpy as np

_CUBIC_A = -0.75


def _cubic_weights(t):
    a = _CUBIC_A

    def near(x):
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.array([far(t + 1), near(t), near(1 - t), far(2 - t)])


def _blur_matrix(size, scale):
    sigma = max((scale - 1.0) / 2.0, 0.001)
    kernel_size = int(max(2.0 * 2 * sigma, 3))
    kernel_size += 1 - kernel_size % 2
    offsets = np.arange(kernel_size) - kernel_size // 2
    kernel = np.exp(-(offsets.astype(np.float64) ** 2) / (2 * sigma ** 2))
    kernel /= kernel.sum()
    matrix = np.zeros((size, size))
    for row in range(size):
        for weight, offset in zip(kernel, offsets):
            src = row + offset
            src = -src if src < 0 else src
            src = 2 * (size - 1) - src if src > size - 1 else src
            matrix[row, src] += weight
    return matrix


def _bicubic_matrix(in_size, out_size):
    matrix = np.zeros((out_size, in_size))
    step = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    for row in range(out_size):
        src = row * step
        base = int(np.floor(src))
        for weight, offset in zip(_cubic_weights(src - base), range(-1, 3)):
            matrix[row, min(max(base + offset, 0), in_size - 1)] += weight
    return matrix


@functools.lru_cache(maxsize=16)
def antialias_resize_matrix(in_size, out_size):
    """``(out_size, in_size)`` float32 operator: blur then bicubic, along one axis."""
    blur = _blur_matrix(in_size, in_size / out_size)
    return (_bicubic_matrix(in_size, out_size) @ blur).astype(np.float32)
