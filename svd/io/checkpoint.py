"""Reading, converting and writing SVD weights in our, Stability's, mindone's and diffusers' layouts.

Conversion is by explicit name tables (svd.io.layouts) with a shape check per tensor;
nothing is matched by sort order. Torch is not needed: the torch side is safetensors.
"""
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mindspore as ms
import numpy as np
from safetensors.numpy import save_file

from svd.io.layouts import STABILITY_IGNORED, LayoutError, layout_entry

DIFFUSERS_FILES = {"unet": "diffusion_pytorch_model.safetensors", "vae": "diffusion_pytorch_model.safetensors",
                   "image_encoder": "model.safetensors"}


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


class DamagedCheckpointError(CheckpointError):
    """The file itself is bad (empty, truncated, unparseable, NaN/Inf values): no config would load it."""


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
    source = TensorSource(path)
    return {key: source.get(key) for key in source.shapes}


def _mindspore_named(keys):
    """Whether any key carries a MindSpore cell parameter name (norm ``gamma``/``beta``, ``embedding_table``)."""
    return any(k.endswith((".gamma", ".beta", ".embedding_table")) for k in keys)


def detect_layout(keys, source="checkpoint"):
    """The layout (see svd.io.layouts) that tensor names ``keys`` are in; ``source`` names the file in errors."""
    keys = list(keys)
    if any("/" in k for k in keys):
        return "mindone.diffusers" if _mindspore_named(k for k in keys if k.startswith("image_encoder/")) \
            else "diffusers"
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return "mindone" if _mindspore_named(keys) else "stability"
    if any(k.startswith("unet.") for k in keys):
        return "mindspore"
    found = ", ".join(repr(k) for k in keys[:3]) if keys else "no tensors"
    raise CheckpointError(f"{source}: matches no known layout: expected 'unet.*' (ours), 'model.diffusion_model.*' "
                          f"(Stability or mindone) or a diffusers folder, found {found}")


def _entries(shapes, layout, model_cfg):
    """Our name -> ([external names], transform)."""
    return {name: layout_entry(name, layout, model_cfg) for name in shapes}


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
        if (layout in ("stability", "mindone") and STABILITY_IGNORED.match(key)) or \
                (layout in ("diffusers", "mindone.diffusers") and key.endswith("position_ids")):
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
    """Our state -> external state in any layout of svd.io.layouts (diffusers keys are ``folder/name``)."""
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


SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                      "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


class SafetensorsReader:
    """Reads one tensor at a time with plain file reads.

    safetensors' own reader memory-maps the file, and every page it touched stays in the
    process's resident memory until the file is closed: loading 6 GB of weights that way
    peaks at twice their size. Here each tensor is read into its own array and nothing else.
    """

    def __init__(self, path):
        self.path = str(path)
        file_size = os.path.getsize(self.path)
        if file_size < 8:
            state = "empty" if not file_size else "truncated"
            raise DamagedCheckpointError(f"{path}: not a safetensors file ({state}: {file_size} bytes)")
        with open(self.path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if 8 + size > file_size:
                raise DamagedCheckpointError(f"{path}: not a safetensors file, or truncated: its header claims "
                                             f"{size} bytes, the file has {file_size}")
            try:
                header = json.loads(f.read(size))
            except (UnicodeDecodeError, ValueError):
                raise DamagedCheckpointError(f"{path}: not a safetensors file (unreadable header)") from None
        if not isinstance(header, dict):
            raise CheckpointError(f"{path}: not a safetensors file (header is not a JSON object)")
        metadata = header.pop("__metadata__", None)
        self.metadata = metadata if isinstance(metadata, dict) else {}
        self.entries = header
        self.data_start = 8 + size
        try:
            end = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        except (TypeError, KeyError, IndexError, ValueError):
            raise CheckpointError(f"{path}: not a safetensors file (header entries without data_offsets)") from None
        if self.data_start + end > file_size:
            raise DamagedCheckpointError(f"{path}: truncated: its tensors need {self.data_start + end} bytes, the "
                                         f"file has {file_size} (an interrupted download or copy?)")

    def shapes(self):
        return {k: tuple(v["shape"]) for k, v in self.entries.items()}

    def get(self, key):
        entry = self.entries[key]
        dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor '{key}' has unsupported dtype {entry['dtype']}")
        begin, end = entry["data_offsets"]
        with open(self.path, "rb") as f:
            f.seek(self.data_start + begin)
            array = np.fromfile(f, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize)
        if entry["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(entry["shape"])


CKPT_DTYPES = {"Float64": "<f8", "Float32": "<f4", "Float16": "<f2", "BFloat16": "<u2", "Int64": "<i8", "Int32": "<i4",
               "Int16": "<i2", "Int8": "i1", "UInt8": "u1", "Bool": "?"}


def _varint(f):
    result = shift = 0
    while True:
        byte = f.read(1)
        if not byte:
            raise EOFError
        result |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return result
        shift += 7


def _fields(f, end):
    """``(field, value)`` of the protobuf message from ``f``'s position to ``end``; a length-delimited value
    comes as ``(offset, length)`` and is skipped over, not read."""
    while f.tell() < end:
        key = _varint(f)
        if key & 7 == 0:
            yield key >> 3, _varint(f)
        elif key & 7 == 2:
            length = _varint(f)
            offset = f.tell()
            f.seek(offset + length)
            yield key >> 3, (offset, length)
        else:
            raise ValueError(f"wire type {key & 7}")


class CkptReader:
    """Reads one tensor at a time from a MindSpore .ckpt, like SafetensorsReader.

    ``ms.load_checkpoint`` parses the whole protobuf at once and peaks at twice the file (19 GB for
    mindone's 9.6 GB SVD files). The file is a sequence of one-``Value`` Checkpoint messages (tag, dims,
    type, content; tensors over 512 MB in several slices under the same tag, optionally a ``crc_num``
    trailer); only their headers are scanned here.
    """

    def __init__(self, path):
        self.path = str(path)
        self.entries = {}
        size = os.path.getsize(self.path)
        with open(self.path, "rb") as f:
            try:
                while f.tell() < size:
                    start = f.tell()
                    if f.read(7) == b"crc_num":  # trailer of save_checkpoint(crc_check=True)
                        break
                    f.seek(start)
                    if _varint(f) != 0x0A:  # Checkpoint.value: field 1, length-delimited
                        raise ValueError("no Checkpoint.value")
                    end = _varint(f) + f.tell()
                    self._scan_value(f, end)
                    f.seek(end)
            except (ValueError, EOFError, UnicodeDecodeError) as err:
                raise DamagedCheckpointError(f"{path}: not a plain MindSpore checkpoint (encrypted or damaged?): "
                                             f"unreadable protobuf near byte {f.tell()} ({err})") from None
        if not self.entries:
            what = "empty file" if not size else "not a checkpoint?"
            raise DamagedCheckpointError(f"{path}: holds no tensors ({what})")
        for name, (_, _, chunks) in self.entries.items():
            if any(offset + length > size for offset, length in chunks):
                raise DamagedCheckpointError(f"{path}: truncated: tensor '{name}' ends past the end of the file "
                                             f"({size} bytes; an interrupted save, download or copy?)")

    def _scan_value(self, f, end):
        name, dims, dtype, chunks = None, [], None, []
        for number, value in _fields(f, end):
            if number == 1:
                name = self._read(f, value).decode()
            elif number != 2:
                raise ValueError(f"unsupported entry (field {number}) after '{name}'")
            else:
                f.seek(value[0])
                for tensor_field, item in _fields(f, value[0] + value[1]):
                    if tensor_field == 1:
                        dims.append(item)
                    elif tensor_field == 2:
                        dtype = self._read(f, item).decode()
                    elif tensor_field == 3:
                        chunks.append(item)
        if name is None or dtype is None:
            raise ValueError(f"an entry without name or type after {len(self.entries)} entries")
        # mindone's own loader drops "._backbone", which saves of AMP-wrapped networks on MindSpore 2.2 inserted.
        name = name.replace("._backbone", "")
        if name in self.entries:
            self.entries[name][2].extend(chunks)
        else:
            self.entries[name] = (tuple(dims), dtype, chunks)

    @staticmethod
    def _read(f, span):
        here = f.tell()
        f.seek(span[0])
        data = f.read(span[1])
        f.seek(here)
        return data

    def shapes(self):
        return {k: dims for k, (dims, _, _) in self.entries.items()}

    def text(self, key):
        """A string entry (``append_dict`` strings of MindSpore's save_checkpoint are stored as type 'str')."""
        _, ms_dtype, chunks = self.entries[key]
        if ms_dtype != "str":
            raise CheckpointError(f"{self.path}: entry '{key}' is a {ms_dtype} tensor, not a string")
        with open(self.path, "rb") as f:
            parts = []
            for offset, length in chunks:
                f.seek(offset)
                parts.append(f.read(length))
        data = b"".join(parts)  # MindSpore stores a numpy unicode array: UTF-32, 4 bytes a character
        return str(np.frombuffer(data, f"<U{len(data) // 4}")[0]) if data else ""

    def get(self, key):
        dims, ms_dtype, chunks = self.entries[key]
        dtype = CKPT_DTYPES.get(ms_dtype)
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor '{key}' has unsupported type {ms_dtype}")
        parts = []
        with open(self.path, "rb") as f:
            for offset, length in chunks:
                f.seek(offset)
                parts.append(np.fromfile(f, dtype=dtype, count=length // np.dtype(dtype).itemsize))
        array = parts[0] if len(parts) == 1 else np.concatenate(parts)
        if ms_dtype == "BFloat16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array.reshape(dims)


def diffusers_weights(root, folder):
    """The weights file of one diffusers sub-model: the plain one, else its only variant (``*.fp16.safetensors``,
    as ``save_pretrained(variant="fp16")`` writes)."""
    filename = DIFFUSERS_FILES[folder]
    plain = root / folder / filename
    if plain.is_file():
        return plain
    stem = filename[:-len(".safetensors")]
    variants = sorted((root / folder).glob(f"{stem}.*.safetensors"))
    if len(variants) == 1:
        return variants[0]
    found = ", ".join(sorted(p.name for p in (root / folder).glob("*"))) if (root / folder).is_dir() else "no folder"
    raise CheckpointError(f"{root}: not a diffusers SVD folder: expected {folder}/{filename} or one variant such as "
                          f"{folder}/{stem}.fp16.safetensors, found {found or 'nothing'}")


MODEL_PREFIXES = ("unet.", "vae.", "image_encoder.")
DELTA_BASE = "base_weights"  # safetensors metadata key of a weights delta: its base file, relative to the delta
TRAINING_BASE = re.compile(r"^random:(?P<seed>\d+)(?:\+(?P<path>.+)\[(?P<parts>[^\]]*)\])?$")


class TensorSource:
    """Tensors of a checkpoint read one at a time, so loading never holds a second copy of the weights.

    A weights delta (a .safetensors whose metadata names ``base_weights``, a file beside it) holds only the
    tensors that differ from that base; ``delta_base`` is then the base's path (None for other files).

    A training checkpoint (train.py's ``step_*.ckpt``) shows only the model weights it holds, the EMA
    copies in place of the raw weights when the run kept them (as final.safetensors has);
    ``training_base`` then names where its other (frozen) weights come from (None for other files).
    Every tensor read is checked to be finite: a NaN or Inf weight is an error naming it.
    """

    def __init__(self, path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint '{path}' does not exist")
        self.path = path
        self.readers = {}
        self.training_base = None
        self.aliases = {}
        if path.is_dir():
            for folder in DIFFUSERS_FILES:
                self.readers[folder + "/"] = SafetensorsReader(diffusers_weights(path, folder))
        elif path.suffix == ".safetensors":
            self.readers[""] = SafetensorsReader(path)
        elif path.suffix == ".ckpt":
            self.readers[""] = CkptReader(path)
        else:
            raise CheckpointError(f"{path}: unsupported checkpoint type '{path.suffix}', expected .safetensors, "
                                  ".ckpt or a diffusers folder")
        self.shapes = {prefix + k: shape for prefix, reader in self.readers.items()
                       for k, shape in reader.shapes().items()}
        if path.suffix == ".ckpt" and {"step", "base_weights"} <= set(self.shapes):
            self._training_view(self.readers[""])
        self.delta_base = None
        if path.suffix == ".safetensors" and DELTA_BASE in self.readers[""].metadata:
            self.delta_base = path.parent / self.readers[""].metadata[DELTA_BASE]

    def _training_view(self, reader):
        self.training_base = reader.text("base_weights")
        names = set(reader.entries)
        if any(re.match(r"^(.+)\.lora\.(\d+)\.(down|up)$", k) for k in names):
            raise CheckpointError(f"{self.path}: a LoRA run's training checkpoint holds adapters, not weights: load "
                                  "the base checkpoint with its lora.safetensors (--lora), written when the run ends")
        weights = sorted(k for k in names if k.startswith(MODEL_PREFIXES))
        if not weights:
            raise CheckpointError(f"{self.path}: a training checkpoint without model weights")
        self.aliases = {k: f"ema.{k}" if f"ema.{k}" in names else k for k in weights}
        self.shapes = {k: self.shapes[alias] for k, alias in self.aliases.items()}

    def get(self, key):
        key = self.aliases.get(key, key)
        prefix = key.split("/", 1)[0] + "/" if "/" in key else ""
        reader = self.readers[prefix]
        array = reader.get(key[len(prefix):])
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            bad = int((~np.isfinite(array)).sum())
            raise DamagedCheckpointError(f"{reader.path}: tensor '{key[len(prefix):]}' has {bad} NaN/Inf values "
                                         f"of {array.size}: the file is damaged or its training diverged (it would "
                                         "give black or noise videos)")
        return array


def _load_training_checkpoint(model, source, model_cfg, prefixes):
    """A train.py step checkpoint into ``model``: its frozen weights from the base it names (a file, or the
    seeded random start of a run with ``--random-weights`` / an ``init`` section), then the weights it holds."""
    shapes = model_shapes(model)
    if prefixes:
        shapes = {k: v for k, v in shapes.items() if k.startswith(tuple(prefixes))}
    path = source.path
    _check_partial(source, shapes, prefixes, "a training checkpoint")
    missing = [k for k in shapes if k not in source.shapes]
    if missing:
        base = source.training_base
        random_base = TRAINING_BASE.match(base)
        if random_base:
            from omegaconf import OmegaConf

            from svd.io.config import build_model
            start = build_model(OmegaConf.create({"model": model_cfg}), seed=int(random_base["seed"]))
            if random_base["path"]:
                parts = tuple(f"{part}." for part in random_base["parts"].split(",") if part)
                if not Path(random_base["path"]).is_file():
                    raise CheckpointError(f"{path}: holds {len(source.shapes)} of {len(shapes)} weights; the others "
                                          f"come from '{random_base['path']}', which does not exist here")
                load_weights(start, random_base["path"], model_cfg, prefixes=parts)
            values = {p.name: p for p in start.get_parameters()}
            params = {p.name: p for p in model.get_parameters()}
            for name in missing:
                params[name].set_data(ms.Tensor(values[name].asnumpy()))
        else:
            if not Path(base).exists():
                raise CheckpointError(f"{path}: holds {len(source.shapes)} of {len(shapes)} weights (the trained "
                                      f"ones); the others come from its base weights '{base}', which do not exist "
                                      "here")
            load_weights(model, base, model_cfg, prefixes=prefixes)
    return _overlay(model, source, shapes)


def _check_partial(source, shapes, prefixes, kind):
    """A file holding some of the model's weights (in our names) must hold nothing else, in the model's shapes."""
    unexpected = sorted(k for k in source.shapes if k not in shapes and not (prefixes and not k.startswith(
        tuple(prefixes))))
    wrong = sorted(f"{k} {tuple(source.shapes[k])} != {tuple(shapes[k])}" for k in source.shapes
                   if k in shapes and tuple(source.shapes[k]) != tuple(shapes[k]))
    if unexpected or wrong:
        report = ConversionReport(unexpected=unexpected, mismatched=wrong)
        raise CheckpointError(f"{source.path}: {kind} that does not match the model config: {report.summary()}")


def _overlay(model, source, shapes):
    """Set the weights ``source`` holds over those already in ``model``."""
    params = {p.name: p for p in model.get_parameters()}
    for name in source.shapes:
        if name in shapes:
            params[name].set_data(ms.Tensor(np.ascontiguousarray(source.get(name), dtype=np.float32)))
    return ConversionReport()


def _load_delta(model, source, model_cfg, prefixes, load_base):
    """A weights delta: the base it names through ``load_base``, then the tensors it holds over it."""
    base = source.delta_base
    if not base.is_file():
        raise CheckpointError(f"{source.path}: holds only the {len(source.shapes)} tensors that differ from its base "
                              f"weights '{base.name}', which are not beside it ({base} does not exist)")
    shapes = model_shapes(model)
    if prefixes:
        shapes = {k: v for k, v in shapes.items() if k.startswith(tuple(prefixes))}
    _check_partial(source, shapes, prefixes, "a weights delta")
    load_base(model, base, model_cfg, prefixes=prefixes)
    return _overlay(model, source, shapes)


def load_weights(model, path, model_cfg, strict=True, prefixes=None, load_base=None):
    """Load any supported checkpoint into ``model`` tensor by tensor; raises CheckpointError naming what does not fit.

    ``prefixes`` (e.g. ``("unet.",)``) loads only those networks and ignores the checkpoint's other keys.
    A training checkpoint (``step_*.ckpt``) loads the weights it holds, over those of the base it names;
    so does a weights delta, whose base is read by ``load_base`` (default: this function).
    """
    source = TensorSource(path)
    if source.training_base is not None:
        return _load_training_checkpoint(model, source, model_cfg, prefixes)
    if source.delta_base is not None:
        return _load_delta(model, source, model_cfg, prefixes, load_base or load_weights)
    shapes = model_shapes(model)
    if prefixes:
        shapes = {k: v for k, v in shapes.items() if k.startswith(tuple(prefixes))}
    try:
        plan, report = match_keys(source.shapes, shapes, model_cfg, detect_layout(source.shapes, path))
    except LayoutError as err:
        raise CheckpointError(f"{path}: parameter '{err}' has no counterpart in this layout") from None
    if prefixes:
        report.unexpected = []
    if strict and not report.ok():
        raise CheckpointError(f"{path}: does not match the model config: {report.summary()}")
    params = {p.name: p for p in model.get_parameters()}
    for name, (keys, kind) in plan.items():
        value = _to_ours([source.get(k) for k in keys], kind, shapes[name])
        params[name].set_data(ms.Tensor(np.ascontiguousarray(value, dtype=np.float32)))
    return report


# atomic_write's temporary files: hidden, named after their target, with a random tag. MindSpore's
# save_checkpoint writes ``<name>.tmp`` first and renames it to ``<name>.ckpt``: both forms are ours.
TEMPORARY = re.compile(r"^\.(?P<target>[^/]+)\.partial-[a-z0-9_]{8}\.(tmp|ckpt|safetensors)$")


def atomic_write(path, write):
    """Write through a hidden temporary file in the same folder, flush it to disk, then rename: a crash
    leaves the previous file (or none) and at most a ``.NAME.partial-XXXXXXXX.*`` file, never a
    half-written ``path``. ``remove_stale_temporaries`` removes such leftovers."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.partial-", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, os.path.splitext(tmp)[0] + ".tmp"):
            if os.path.exists(leftover):
                os.remove(leftover)


def remove_stale_temporaries(folder):
    """Delete ``atomic_write``'s leftovers in ``folder`` (a crash mid-save); returns their paths.

    Only names of exactly that pattern are touched. Call it when no save into ``folder`` is running.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if TEMPORARY.match(p.name) and p.is_file())
    for path in stale:
        path.unlink()
    return stale


def save_tensors(state, path, metadata=None):
    """name->ndarray dict to .safetensors (with optional str->str ``metadata``) or .ckpt (atomically)."""
    path = Path(path)
    if metadata and path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: metadata needs a .safetensors output")
    if path.suffix == ".safetensors":
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
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
