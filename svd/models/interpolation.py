"""The keyframe-interpolation model: SVD's UNet conditioned on known frames every 4th position.

It is the image-to-video UNet (config ``unet.interpolation: true``) whose concat input carries, for every
frame, the latent of the nearest keyframe (the keyframes sit at positions 0, 4, 8, ...; a frame between two
takes the nearer one, a tie the earlier one), as SVD repeats its first frame to every frame, plus one mask
channel: 1 at the keyframe positions, 0 elsewhere. One pass turns k keyframes into ``(k - 1) * 4 + 1``
frames (5 -> 17 -> 65). The input convolution of the base model grows by the mask channel, whose weights
start at zero: an interpolation model fresh from base weights computes exactly what the base model does
with the same concat latents (load_model_weights). svd.sampling.long_video runs it; svd.training.step.InterpolationLoss
trains it.

Conditioning latents are unscaled (posterior-mode space, like SVD's concat latent): a keyframe latent in
diffusion space (x scale_factor) is divided by the scale factor first.
"""
import copy

import mindspore as ms
import numpy as np
from mindspore import Tensor
from omegaconf import OmegaConf

from svd.io.checkpoint import CheckpointError, TensorSource, detect_layout, load_weights
from svd.io.layouts import LayoutError, layout_entry

KEYFRAME_SPACING = 4
CONV_IN = "unet.input_blocks.0.0.weight"


def is_interpolation_model(model):
    """Whether ``model`` (an SVDModel) is a keyframe-interpolation model."""
    return bool(getattr(model.unet, "interpolation", False))


def frames_for_keyframes(num_keyframes, spacing=KEYFRAME_SPACING):
    """Frames of one interpolation pass over ``num_keyframes`` keyframes: ``(k - 1) * spacing + 1``."""
    return (num_keyframes - 1) * spacing + 1


def keyframe_count(num_frames, spacing=KEYFRAME_SPACING):
    """Keyframes of a window of ``num_frames`` frames; one-line error unless ``num_frames = (k - 1) * 4 + 1``,
    k >= 2."""
    if num_frames < spacing + 1 or (num_frames - 1) % spacing:
        raise ValueError(f"an interpolation window has (k - 1) * {spacing} + 1 frames with k >= 2 keyframes "
                         f"(5, 9, 13, 17, ...), got {num_frames}")
    return (num_frames - 1) // spacing + 1


def keyframe_positions(num_frames, spacing=KEYFRAME_SPACING):
    """Positions of the known frames in a window: ``0, 4, 8, ..., num_frames - 1``."""
    keyframe_count(num_frames, spacing)
    return list(range(0, num_frames, spacing))


def nearest_keyframe(num_frames, spacing=KEYFRAME_SPACING):
    """For every frame of a window, the index of the keyframe whose latent it carries: the nearest, ties to the
    earlier one (``0 0 0 1 1 1 1 2 ...`` for spacing 4)."""
    keyframe_count(num_frames, spacing)
    return [(t + (spacing - 1) // 2) // spacing for t in range(num_frames)]


def keyframe_mask(num_frames, spacing=KEYFRAME_SPACING):
    """``(num_frames,)`` float32: 1 at the keyframe positions, 0 elsewhere."""
    mask = np.zeros(num_frames, np.float32)
    mask[keyframe_positions(num_frames, spacing)] = 1.0
    return mask


def interpolation_concat(keyframes, num_frames, spacing=KEYFRAME_SPACING):
    """Concat input ``(T, C + 1, h, w)`` of one window from its unscaled keyframe latents ``(k, C, h, w)`` (numpy)."""
    keyframes = np.asarray(keyframes, np.float32)
    if keyframes.shape[0] != keyframe_count(num_frames, spacing):
        raise ValueError(f"a window of {num_frames} frames has {keyframe_count(num_frames, spacing)} keyframes, "
                         f"got {keyframes.shape[0]}")
    hint = keyframes[nearest_keyframe(num_frames, spacing)]
    mask = np.broadcast_to(keyframe_mask(num_frames, spacing)[:, None, None, None], (num_frames, 1) + hint.shape[2:])
    return np.concatenate([hint, mask], axis=1)


def interpolation_config(base_cfg, window=None, num_frames=None):
    """The config of an interpolation model derived from a base model's config (SVD, SVD-XT, ours).

    ``window``: its temporal attention window (default: the base's); ``num_frames``: its trained window length
    (default: the longest ``(k - 1) * 4 + 1`` within the base's ``sampling.num_frames``, at least 5).
    """
    cfg = copy.deepcopy(base_cfg)
    OmegaConf.update(cfg, "model.unet.interpolation", True, force_add=True)
    if window is not None:
        OmegaConf.update(cfg, "model.unet.temporal_attention_window", window, force_add=True)
    if num_frames is None:
        base = int(cfg.sampling.num_frames)
        num_frames = max(KEYFRAME_SPACING + 1, base - (base - 1) % KEYFRAME_SPACING)
    keyframe_count(num_frames)
    cfg.sampling.num_frames = num_frames
    return cfg


class _NarrowedInput:
    """The interpolation model's input-convolution weight seen with the base model's channel count: a loaded
    base weight fills the first channels, the mask channel's weights become zero."""

    def __init__(self, param, base_channels):
        self.param = param
        self.name = param.name
        self.shape = (param.shape[0], base_channels) + tuple(param.shape[2:])

    def set_data(self, value):
        value = value.asnumpy() if isinstance(value, Tensor) else np.asarray(value)
        grown = np.zeros(tuple(self.param.shape), np.float32)
        grown[:, :value.shape[1]] = value
        self.param.set_data(Tensor(grown, ms.float32))


class _BaseView:
    """``model`` as load_weights sees it when the checkpoint is a base model's: all parameters as they are,
    the input convolution narrowed to the base channels."""

    def __init__(self, model, base_channels):
        self.model = model
        self.base_channels = base_channels

    def get_parameters(self):
        for param in self.model.get_parameters():
            yield _NarrowedInput(param, self.base_channels) if param.name == CONV_IN else param


def checkpoint_input_channels(path, model_cfg):
    """Input channels of the UNet in the checkpoint at ``path`` (any layout), or None when it has no UNet."""
    source = TensorSource(path)
    try:
        keys, _ = layout_entry(CONV_IN, detect_layout(source.shapes, path), model_cfg)
    except LayoutError:
        return None
    shape = source.shapes.get(keys[0])
    return None if shape is None else shape[1]


def load_model_weights(model, path, model_cfg, strict=True, prefixes=None):
    """svd.io.checkpoint.load_weights for any model, also an interpolation model from a base model's checkpoint
    (SVD, SVD-XT, ours; any layout): the input convolution is then grown by the mask channel, zero-initialised.
    An interpolation delta (svd_tools.package_toy_model --interp) loads its base model this way, then its own
    tensors. Returns the load report."""
    if not is_interpolation_model(model) or (prefixes and not any(CONV_IN.startswith(p) for p in prefixes)):
        return load_weights(model, path, model_cfg, strict, prefixes)
    params = {p.name: p for p in model.get_parameters()}
    channels = params[CONV_IN].shape[1]
    found = checkpoint_input_channels(path, model_cfg)
    if found == channels - 1:
        return load_weights(_BaseView(model, channels - 1), path, model_cfg, strict, prefixes)
    if found not in (None, channels):
        raise CheckpointError(f"{path}: its UNet takes {found} input channels; this interpolation model takes "
                              f"{channels} ({channels - 1} of a base model plus the mask channel)")
    return load_weights(model, path, model_cfg, strict, prefixes, load_base=load_model_weights)
