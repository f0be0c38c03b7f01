"""Reading, converting and writing SVD weights in our, Stability's and diffusers' layouts.

Conversion is by explicit name tables (svd.layouts) with a shape check per tensor;
nothing is matched by sort order. Torch is not needed: the torch side is safetensors.
"""
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
import numpy as np
from safetensors.numpy import load_file, save_file

from svd.layouts import STABILITY_IGNORED, LayoutError, diffusers_entry, stability_name

DIFFUSERS_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                   "image_encoder": "model.safetensors"}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


@dataclass
class ConversionReport:
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)

    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit=5):
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("shape mismatch", self.mismatched)):
            if keys:
                shown = ", ".join(str(k) for k in keys[:limit])
                more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
                parts.append(f"{len(keys)} {label}: {shown}{more}")
        return "; ".join(parts) or "all keys matched"


def model_shapes(model):
    return {p.name: tuple(p.shape) for p in model.get_parameters()}


def read_tensors(path):
    """Load a flat name->ndarray dict from .safetensors, .ckpt or a diffusers folder."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist")
    if path.is_dir():
        state = {}
        for folder, filename in DIFFUSERS_FILES.items():
            file = path / folder / filename
            if not file.is_file():
                raise CheckpointError(f"{path}: not a diffusers SVD folder, missing {folder}/{filename}")
            state.update({f"{folder}/{k}": v for k, v in load_file(str(file)).items()})
        return state
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix == ".ckpt":
        return {k: v.asnumpy() for k, v in ms.load_checkpoint(str(path)).items()}
    raise CheckpointError(f"{path}: unsupported checkpoint type '{path.suffix}', expected .safetensors, .ckpt "
                          "or a diffusers folder")


def detect_layout(state):
    if any("/" in k for k in state):
        return "diffusers"
    if any(k.startswith("model.diffusion_model.") for k in state):
        return "stability"
    if any(k.startswith("unet.") for k in state):
        return "mindspore"
    raise CheckpointError("cannot tell the checkpoint layout: no 'unet.', 'model.diffusion_model.' or "
                          "diffusers folder keys")


def _entries(shapes, layout, model_cfg):
    """Our name -> ([external names], transform)."""
    entries = {}
    for name in shapes:
        if layout == "mindspore":
            entries[name] = ([name], "same")
        elif layout == "stability":
            entries[name] = ([stability_name(name)], "same")
        else:
            folder, keys, kind = diffusers_entry(name, model_cfg["unet"], model_cfg["vae"])
            entries[name] = ([f"{folder}/{k}" for k in keys], kind)
    return entries


def _to_ours(tensors, kind, shape):
    if kind == "split_qkv":
        return np.concatenate(tensors, axis=0)
    if kind == "conv1x1":
        return tensors[0].reshape(shape)
    if kind == "transpose":
        return tensors[0].T
    return tensors[0]


def _from_ours(array, kind, count):
    if kind == "split_qkv":
        return np.split(array, count, axis=0)
    if kind == "conv1x1":
        return [array.reshape(array.shape[0], array.shape[1])]
    if kind == "transpose":
        return [array.T]
    return [array]


def external_shapes(kind, shape, count):
    """Shapes of the external tensors that make one of our parameters of ``shape``."""
    if kind == "split_qkv":
        return [(shape[0] // count,) + tuple(shape[1:])] * count
    if kind == "conv1x1":
        return [tuple(shape[:2])]
    if kind == "transpose":
        return [tuple(shape[::-1])]
    return [tuple(shape)]


def match_keys(available, shapes, model_cfg, layout):
    """Plan a conversion from external ``name -> shape`` to our parameters; report every gap."""
    report = ConversionReport()
    plan = {}
    claimed = set()
    for name, (keys, kind) in _entries(shapes, layout, model_cfg).items():
        absent = [k for k in keys if k not in available]
        if absent:
            report.missing.extend(absent)
            continue
        claimed.update(keys)
        expected = external_shapes(kind, shapes[name], len(keys))
        wrong = [f"{k} {tuple(available[k])} != {e}" for k, e in zip(keys, expected) if tuple(available[k]) != e]
        if wrong:
            report.mismatched.extend(wrong)
            continue
        plan[name] = (keys, kind)
    for key in available:
        if key in claimed:
            continue
        if (layout == "stability" and STABILITY_IGNORED.match(key)) or \
                (layout == "diffusers" and key.endswith("position_ids")):
            report.ignored.append(key)
        else:
            report.unexpected.append(key)
    return plan, report


def convert_to_ours(state, shapes, model_cfg, layout=None):
    """External state -> (our state, report). Checks coverage and every shape."""
    layout = layout or detect_layout(state)
    plan, report = match_keys({k: v.shape for k, v in state.items()}, shapes, model_cfg, layout)
    ours = {name: np.ascontiguousarray(_to_ours([state[k] for k in keys], kind, shapes[name]))
            for name, (keys, kind) in plan.items()}
    return ours, report


def convert_from_ours(state, model_cfg, layout):
    """Our state -> external state (``stability`` or ``diffusers``; diffusers keys are ``folder/name``)."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    try:
        entries = _entries(shapes, layout, model_cfg)
    except LayoutError as err:
        raise CheckpointError(f"parameter '{err}' has no counterpart in the {layout} layout") from None
    out = {}
    for name, (keys, kind) in entries.items():
        for key, array in zip(keys, _from_ours(state[name], kind, len(keys))):
            out[key] = np.ascontiguousarray(array)
    return out


def load_weights(model, path, model_cfg, strict=True):
    """Load any supported checkpoint into ``model``; raises CheckpointError naming what does not fit."""
    state = read_tensors(path)
    try:
        ours, report = convert_to_ours(state, model_shapes(model), model_cfg)
    except LayoutError as err:
        raise CheckpointError(f"{path}: parameter '{err}' has no counterpart in this layout") from None
    if strict and not report.ok():
        raise CheckpointError(f"{path}: does not match the model config: {report.summary()}")
    params = {k: ms.Parameter(ms.Tensor(v.astype(np.float32)), name=k) for k, v in ours.items()}
    ms.load_param_into_net(model, params, strict_load=True)
    return report


def atomic_write(path, write):
    """Write through a temporary file in the same folder, then rename: no half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_tensors(state, path):
    """name->ndarray dict to .safetensors or .ckpt (atomically)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        atomic_write(path, lambda tmp: save_file(state, tmp))
    elif path.suffix == ".ckpt":
        params = [{"name": k, "data": ms.Tensor(v)} for k, v in state.items()]
        atomic_write(path, lambda tmp: ms.save_checkpoint(params, tmp))
    else:
        raise CheckpointError(f"{path}: unsupported output type '{path.suffix}', expected .safetensors or .ckpt")


def save_diffusers_folder(state, path):
    """Write ``folder/name`` keyed tensors as a diffusers folder tree (weights only)."""
    for folder, filename in DIFFUSERS_FILES.items():
        part = {k.split("/", 1)[1]: v for k, v in state.items() if k.startswith(folder + "/")}
        save_tensors(part, Path(path) / folder / filename)
