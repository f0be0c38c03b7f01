"""Full-size SVD weights for the benchmark: seeded random, in the diffusers folder layout, streamed to disk.

    python -m bench.full_weights bench/.weights/svd

Each tensor is drawn from a generator seeded by its name and written straight into the
safetensors file, so generation never holds more than one tensor. Both frameworks load
the same files: diffusers natively, ours through the diffusers conversion table.
"""
import json
import sys
import zlib
from pathlib import Path

import numpy as np

from svd.io.checkpoint import DIFFUSERS_FILES
from tests.reference import published_modules


def seeded_tensor(name, shape):
    """U(+-1/sqrt(fan_in)) matrices and kernels, norm scales near 1, small biases; a function of the name only."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if len(shape) >= 2:
        bound = 1.0 / np.sqrt(np.prod(shape[1:]))
        return rng.uniform(-bound, bound, shape).astype(np.float32)
    base = 1.0 if name.endswith("weight") else 0.0
    return (base + rng.uniform(-0.05, 0.05, shape)).astype(np.float32)


def write_streamed_safetensors(path, shapes, make):
    """safetensors file of float32 tensors ``name -> shape``, each made by ``make(name, shape)`` on demand."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with open(tmp, "wb") as out:
        out.write(len(blob).to_bytes(8, "little"))
        out.write(blob)
        for name, shape in shapes.items():
            out.write(np.ascontiguousarray(make(name, shape), dtype="<f4").tobytes())
    tmp.replace(path)


def main():
    root = Path(sys.argv[1])
    for folder, module in published_modules().items():
        target = root / folder / DIFFUSERS_FILES[folder]
        if target.is_file():
            continue
        shapes = {k: tuple(v.shape) for k, v in module.state_dict().items() if v.is_floating_point()}
        write_streamed_safetensors(target, shapes, lambda name, shape: seeded_tensor(f"{folder}/{name}", shape))
        print(f"wrote {target} ({sum(int(np.prod(s)) for s in shapes.values()) / 1e9:.2f} B parameters)")


if __name__ == "__main__":
    main()
