"""LoRA: low-rank adapters on the UNet's attention projections, trained alone and loaded or merged at inference.

An adapted layer computes ``W x + b + scale * (alpha / rank) * up (down x)``, ``down`` (rank x in) and ``up``
(out x rank). ``up`` starts at zero, so a fresh adapter leaves the model unchanged. The default targets are
the temporal transformer blocks' attention (``time_stack``), where the SVD paper's camera-motion LoRAs sit.

In SVD every cross-attention (``attn2``) attends to one context token, the CLIP image embedding: the
softmax over one key is exactly 1 whatever the logit, so the output is ``to_out(to_v(context))`` and
to_q/to_k get zero gradient (svd.models.attention skips them altogether). A LoRA there is useless; the
default targets leave them out and targeting them warns.

A LoRA file is a safetensors file with ``<layer>.lora_down.weight`` and ``<layer>.lora_up.weight`` per
adapted layer (``layer`` as ``unet.input_blocks.1.1.time_stack.0.attn1.to_q``) and ``rank``, ``alpha``
and ``targets`` in its metadata.
"""
import fnmatch
import json
import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.nn.utils import no_init_parameters
from safetensors import safe_open
from safetensors.numpy import save_file

from svd.io.checkpoint import CheckpointError, atomic_write
from svd.models.attention import Attention

PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
DEFAULT_TARGETS = ("unet.*.time_stack.*.attn1.to_[qkv]", "unet.*.time_stack.*.attn1.to_out.0",
                   "unet.*.time_stack.*.attn2.to_v", "unet.*.time_stack.*.attn2.to_out.0")
# Model parameter names of the adapters (slot i of a layer) and the tensor names of a LoRA file.
LORA_PARAMETER = re.compile(r"^(.+)\.lora\.(\d+)\.(down|up)$")
FILE_KEY = re.compile(r"^(.+)\.lora_(down|up)\.weight$")


def is_lora_parameter(name):
    return bool(LORA_PARAMETER.match(name))


class LoRAAdapter(nn.Cell):
    """One low-rank update ``scale * up (down x)``; ``scale`` already includes alpha / rank."""

    def __init__(self, down, up, scale):
        super().__init__()
        self.down = Parameter(Tensor(down, ms.float32), name="down")
        self.up = Parameter(Tensor(up, ms.float32), name="up")
        self.scale = float(scale)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        rows = x.reshape(-1, x.shape[-1])
        hidden = self.matmul(rows, self.down.astype(x.dtype))
        out = self.matmul(hidden, self.up.astype(x.dtype)) * self.scale
        return out.reshape(x.shape[:-1] + (-1,))


class LoRADense(nn.Dense):
    """A Dense layer plus unmerged adapters. It holds the base layer's own weight and bias Parameters,
    so their names (and checkpoints) stay those of the layer it replaces."""

    def __init__(self, base):
        with no_init_parameters():
            super().__init__(base.in_channels, base.out_channels, has_bias=base.has_bias)
        self.insert_param_to_cell("weight", base.weight)
        if base.has_bias:
            self.insert_param_to_cell("bias", base.bias)
        self.lora = nn.CellList()

    def construct(self, x):
        out = super().construct(x)
        for adapter in self.lora:
            out = out + adapter(x)
        return out


def attention_projections(model):
    """``{name: (attention cell, projection)}`` of every attention projection of the model: what a LoRA may adapt."""
    found = {}
    for name, cell in model.cells_and_names():
        if isinstance(cell, Attention):
            found.update({f"{name}.{proj}": (cell, proj) for proj in PROJECTIONS})
    return found


def projection_layer(attention, proj):
    return attention.to_out[0] if proj == "to_out.0" else getattr(attention, proj)


def is_inert(attention, proj):
    """to_q/to_k of a cross-attention: one context token, zero gradient, no effect."""
    return attention.cross and proj in ("to_q", "to_k")


def warn_inert(names, what):
    if names:
        warnings.warn(f"{what} {len(names)} cross-attention to_q/to_k layers (e.g. {names[0]}): SVD's context is one "
                      "token, so softmax over one key is 1 and these layers get zero gradient and have no effect",
                      stacklevel=3)


def add_adapter(model, name, attention, proj, down, up, scale):
    """Attach one unmerged adapter to projection ``name``, replacing its Dense by a LoRADense the first time."""
    if ms.get_context("mode") == ms.GRAPH_MODE and model.unet.compile_cache:
        raise ValueError("an unmerged LoRA must be added before the UNet's first call in graph mode (its graph "
                         "is compiled by then): load it earlier, or merge it")
    layer = projection_layer(attention, proj)
    if not isinstance(layer, LoRADense):
        layer = LoRADense(layer)
        if proj == "to_out.0":
            attention.to_out[0] = layer
        else:
            setattr(attention, proj, layer)
    layer.lora.append(LoRAAdapter(down, up, scale))
    layer.update_parameters_name(name + ".")  # model-wide names; the weight keeps its own


def select_targets(projections, targets):
    """Projection names matched by the glob ``targets``; each pattern must match something."""
    if isinstance(targets, str) or not targets or not all(isinstance(t, str) for t in targets):
        raise ValueError(f"lora.targets must be a non-empty list of name patterns, got {targets!r}")
    chosen = set()
    for pattern in targets:
        matched = [name for name in projections if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(f"lora target '{pattern}' matches no attention projection of the UNet (names look like "
                             f"'{next(iter(projections))}')")
        chosen.update(matched)
    return [name for name in projections if name in chosen]


def add_lora(model, rank, alpha, targets=DEFAULT_TARGETS, seed=0):
    """Fresh trainable adapters (seeded ``down`` as PyTorch's Linear init, zero ``up``) on the targeted
    projections; returns their names."""
    if not isinstance(rank, numbers.Integral) or rank < 1:
        raise ValueError(f"lora.rank must be an integer >= 1, got {rank!r}")
    if not isinstance(alpha, numbers.Real) or not alpha > 0:
        raise ValueError(f"lora.alpha must be a positive number, got {alpha!r}")
    projections = attention_projections(model)
    names = select_targets(projections, targets)
    warn_inert([n for n in names if is_inert(*projections[n])], "lora.targets select")
    rng = np.random.default_rng(seed)
    for name in names:
        attention, proj = projections[name]
        out_dim, in_dim = projection_layer(attention, proj).weight.shape
        down = rng.uniform(-1.0, 1.0, (rank, in_dim)) / math.sqrt(in_dim)
        add_adapter(model, name, attention, proj, down, np.zeros((out_dim, rank)), alpha / rank)
    return names


def lora_tensors(state):
    """The LoRA file tensors in a name->array ``state`` of a model trained with :func:`add_lora`."""
    return {f"{m[1]}.lora_{m[3]}.weight": value for name, value in state.items() if (m := LORA_PARAMETER.match(name))}


def save_lora(tensors, path, rank, alpha, targets):
    """Write LoRA tensors (``<layer>.lora_down.weight`` ...) with their rank, alpha and target patterns."""
    metadata = {"format": "svd-mindspore-lora", "rank": str(int(rank)), "alpha": repr(float(alpha)),
                "targets": json.dumps(list(targets))}
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(arrays, tmp, metadata=metadata))


@dataclass
class LoRAFile:
    """A LoRA read from disk: ``pairs`` maps a layer name to its ``(down, up)`` arrays."""
    path: str
    rank: int
    alpha: float
    targets: list
    pairs: dict

    def update(self, layer, scale):
        """``scale * alpha / rank * up @ down``: what merging adds to the layer's weight (float64)."""
        down, up = self.pairs[layer]
        return scale * self.alpha / self.rank * (up.astype(np.float64) @ down.astype(np.float64))


def read_lora(path):
    """Read and self-check a LoRA file (paired keys, ranks as its metadata says); raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file '{path}' does not exist")
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: a LoRA file must be .safetensors, got '{path.suffix}'")
    with safe_open(str(path), framework="np") as f:
        metadata = f.metadata() or {}
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    if "rank" not in metadata or "alpha" not in metadata:
        raise CheckpointError(f"{path}: not a LoRA file of this project (no 'rank'/'alpha' in its metadata)")
    rank, alpha = int(metadata["rank"]), float(metadata["alpha"])
    halves = {}
    for key, value in tensors.items():
        m = FILE_KEY.match(key)
        if m is None:
            raise CheckpointError(f"{path}: key '{key}' is not a LoRA tensor (expected <layer>.lora_down.weight "
                                  "and <layer>.lora_up.weight)")
        rank_axis = 0 if m[2] == "down" else 1
        if value.ndim != 2 or value.shape[rank_axis] != rank:
            raise CheckpointError(f"{path}: key '{key}' has shape {tuple(value.shape)}, not rank {rank} as the "
                                  "file's metadata says")
        halves.setdefault(m[1], {})[m[2]] = value
    for layer, pair in halves.items():
        if len(pair) != 2:
            missing = "up" if "down" in pair else "down"
            raise CheckpointError(f"{path}: '{layer}.lora_{missing}.weight' is missing")
    if not halves:
        raise CheckpointError(f"{path}: holds no LoRA tensors")
    return LoRAFile(str(path), rank, alpha, json.loads(metadata.get("targets", "[]")),
                    {layer: (pair["down"], pair["up"]) for layer, pair in halves.items()})


def check_scale(scale, source):
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale):
        raise ValueError(f"LoRA scale for '{source}' must be a finite number, got {scale!r}")


def check_fits(lora, projections):
    """Every layer of ``lora`` is a projection of the model with matching in/out sizes."""
    unknown = [layer for layer in lora.pairs if layer not in projections]
    if unknown:
        raise CheckpointError(f"{lora.path}: {len(unknown)} LoRA targets are not attention projections of this model, "
                              f"e.g. '{unknown[0]}' (was it trained for another config?)")
    for layer, (down, up) in lora.pairs.items():
        out_dim, in_dim = projection_layer(*projections[layer]).weight.shape
        if down.shape[1] != in_dim:
            raise CheckpointError(f"{lora.path}: key '{layer}.lora_down.weight' has shape {tuple(down.shape)}, "
                                  f"the layer takes {in_dim} inputs")
        if up.shape[0] != out_dim:
            raise CheckpointError(f"{lora.path}: key '{layer}.lora_up.weight' has shape {tuple(up.shape)}, "
                                  f"the layer has {out_dim} outputs")
    warn_inert([n for n in lora.pairs if is_inert(*projections[n])], f"{lora.path} adapts")


def merge_lora(state, lora, scale=1.0):
    """Add ``lora`` at ``scale`` into the ``<layer>.weight`` arrays of a name->array ``state`` (in place)."""
    for layer in lora.pairs:
        key = f"{layer}.weight"
        state[key] = (state[key].astype(np.float64) + lora.update(layer, scale)).astype(state[key].dtype)
    return state


def load_lora(model, path, scale=1.0, merge=False):
    """Apply the LoRA file at ``path`` to ``model`` at ``scale``: as unmerged adapters (kept apart from the
    weights; several LoRAs add up), or ``merge``d into the weights (no cost per call). Returns the LoRAFile."""
    check_scale(scale, path)
    lora = read_lora(path)
    projections = attention_projections(model)
    check_fits(lora, projections)
    if merge:
        weights = {f"{layer}.weight": projection_layer(*projections[layer]).weight for layer in lora.pairs}
        merged = merge_lora({k: w.asnumpy() for k, w in weights.items()}, lora, scale)
        for key, weight in weights.items():
            weight.set_data(Tensor(merged[key]))
    else:
        for layer, (down, up) in lora.pairs.items():
            add_adapter(model, layer, *projections[layer], down, up, scale * lora.alpha / lora.rank)
    return lora


def parse_lora_spec(spec):
    """``FILE[:SCALE]`` (command lines) -> ``(path, scale)``; the scale defaults to 1."""
    path, sep, scale = spec.rpartition(":")
    if not sep or Path(spec).exists():
        return spec, 1.0
    try:
        value = float(scale)
    except ValueError:
        raise ValueError(f"--lora '{spec}': scale '{scale}' is not a number (use FILE or FILE:SCALE)") from None
    check_scale(value, path)
    return path, value
