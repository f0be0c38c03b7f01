"""Image resizing: the conditioning image's fit to the video size, and CLIP's anti-aliased resize.

Fit (``fit_image``): ``cover`` (default) scales the image until it covers the target and crops the
centre; ``stretch`` scales each axis independently (what diffusers' video processor does by default).

CLIP resize (``antialias_resize_matrix``): Gaussian blur (reflect padding, sigma = (scale - 1) / 2)
followed by bicubic interpolation with aligned corners is linear and separable, so each axis is one
dense matrix built once in float64. This reproduces the CLIP preprocessing of the reference
pipelines exactly, on any backend.
"""
import functools
import warnings

import numpy as np
from PIL import Image

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


RESIZE_MODES = ("cover", "stretch")
CROP_WARNING_FRACTION = 0.25


def source_box(in_height, in_width, height, width, mode):
    """Region of the input that becomes the output: the centred box of the output's aspect ratio
    (``cover``) or the whole image (``stretch``). Returns ``(left, top, right, bottom)`` in floats."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got '{mode}'")
    if mode == "stretch":
        return 0.0, 0.0, float(in_width), float(in_height)
    box_w, box_h = min(in_width, in_height * width / height), min(in_height, in_width * height / width)
    left, top = (in_width - box_w) / 2, (in_height - box_h) / 2
    return left, top, left + box_w, top + box_h


def fit_image(image, height, width, mode="cover"):
    """Float ``H x W x 3`` image in [0, 1] resized (Lanczos, in float) to ``height x width``.

    ``cover`` scales the image to cover the target and crops the centre (nothing is distorted;
    a one-line warning when more than a quarter of the image is cut); ``stretch`` scales each
    axis on its own (nothing is cut; shapes are distorted when the aspect ratios differ).
    """
    in_height, in_width = image.shape[:2]
    left, top, right, bottom = source_box(in_height, in_width, height, width, mode)
    removed = 1.0 - (right - left) * (bottom - top) / (in_width * in_height)
    if removed > CROP_WARNING_FRACTION:
        warnings.warn(f"image {in_height}x{in_width} -> {height}x{width}: the centre crop removes {removed:.0%} of "
                      "it (resize_mode='stretch' keeps all of it, distorted)", stacklevel=3)
    if (in_height, in_width) == (height, width):
        return image
    channels = [Image.fromarray(np.ascontiguousarray(image[..., c], np.float32))
                .resize((width, height), Image.Resampling.LANCZOS, box=(left, top, right, bottom))
                for c in range(image.shape[2])]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=-1), 0.0, 1.0)
