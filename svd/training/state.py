"""Training checkpoints: atomic, checksummed, the latest ``keep`` retained, everything needed to resume exactly.

A checkpoint holds the trainable weights, the optimizer moments and step, the accumulation
buffers, the loss-scale state and the EMA weights — not the frozen backbone, which comes from the
pretrained weights named in the checkpoint (or, for random-weight runs, is stored too) — and a
SHA-256 of all that tensor data (names, dtypes, shapes and bytes). Loading recomputes it: a
checkpoint with damaged bytes, a truncated one, or one that does not parse is never resumed
from; ``--resume auto`` then falls back to the newest intact one with a one-line warning.
"""
import hashlib
import re
import sys
from pathlib import Path

import mindspore as ms
import numpy as np

from svd.io.checkpoint import CheckpointError, atomic_write, remove_stale_temporaries

STEP_FILE = re.compile(r"^step_(\d{8})\.ckpt$")
# Derived from the config at start-up rather than restored, so a resumed run may change its length.
DERIVED = {"learning_rate"}
# Entries of append_dict, not tensors of the train step.
META = ("step", "base_weights", "checksum")


def _kept(train_step, exclude):
    return [p for p in train_step.get_parameters() if p.name not in exclude and p.name not in DERIVED]


def tensor_checksum(tensors):
    """SHA-256 over ``name -> tensor`` (MindSpore or numpy) in name order: name, dtype, shape and the bytes of
    each, converted to numpy one at a time."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        array = np.ascontiguousarray(value.asnumpy() if hasattr(value, "asnumpy") else value)
        digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _fsync_folder(folder):
    import os

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointManager:
    def __init__(self, directory, keep=3):
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step):
        return self.directory / f"step_{step:08d}.ckpt"

    def saved(self):
        """(step, path) of every checkpoint, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.directory.iterdir() if (m := STEP_FILE.match(p.name))]
        return sorted(found)

    def latest(self):
        saved = self.saved()
        return saved[-1][1] if saved else None

    def clean_up(self):
        """Remove the hidden partial files a crash mid-save left (only svd.io.checkpoint.atomic_write's own)."""
        removed = remove_stale_temporaries(self.directory)
        for path in removed:
            print(f"note: removed {path}, a partial file of an interrupted save", file=sys.stderr)
        return removed

    def save(self, train_step, step, exclude, base_weights):
        kept = _kept(train_step, exclude)
        checksum = tensor_checksum({p.name: p for p in kept})
        params = [{"name": p.name, "data": p} for p in kept]
        path = self.path(step)
        atomic_write(path, lambda tmp: ms.save_checkpoint(params, tmp, append_dict={
            "step": step, "base_weights": base_weights, "checksum": checksum}))
        _fsync_folder(self.directory)
        for _, old in self.saved()[:-self.keep]:
            old.unlink()
        return path

    @staticmethod
    def read(path):
        """``(step, base weights, name -> Parameter)`` of a checkpoint whose checksum matches and whose tensors
        are finite; CheckpointError naming the file otherwise (damaged, truncated, unparseable, NaN/Inf, not a
        training checkpoint)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint '{path}' does not exist")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: empty file (a save that never finished)")
        try:
            state = ms.load_checkpoint(str(path))
        except Exception as err:  # MindSpore raises ValueError/RuntimeError/TypeError for damaged protobuf
            raise CheckpointError(f"{path}: unreadable, truncated or damaged ({str(err).splitlines()[0][:120]})") \
                from None
        if "step" not in state:
            raise CheckpointError(f"{path}: not a training checkpoint (no 'step' entry)")
        step = int(state.pop("step").asnumpy())
        base = state.pop("base_weights", None)
        saved_checksum = state.pop("checksum", None)
        if saved_checksum is None:
            print(f"warning: {path} has no checksum (written before checksums): its data cannot be verified",
                  file=sys.stderr)
        elif tensor_checksum(state) != str(saved_checksum):
            raise CheckpointError(f"{path}: checksum mismatch: the tensor data is damaged")
        for name in sorted(state):
            array = state[name].asnumpy()
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise CheckpointError(f"{path}: tensor '{name}' has {int((~np.isfinite(array)).sum())} NaN/Inf "
                                      "values (the run diverged before this checkpoint; lower optimizer.lr or "
                                      "resume from an earlier step_*.ckpt)")
        return step, None if base is None else str(base), state

    def latest_intact(self):
        """``(path, read(path))`` of the newest checkpoint that reads back intact, None if there is none.

        A damaged newer checkpoint is skipped with a one-line warning naming it; if every checkpoint is
        damaged, CheckpointError lists them.
        """
        problems = []
        for _, path in reversed(self.saved()):
            try:
                contents = self.read(path)
            except CheckpointError as err:
                problems.append(str(err))
                print(f"warning: {err}; falling back to the previous checkpoint", file=sys.stderr)
                continue
            return path, contents
        if problems:
            raise CheckpointError(f"no intact checkpoint in '{self.directory}' to resume from: "
                                  + "; ".join(problems))
        return None

    def load(self, path, train_step, exclude, base_weights, contents=None):
        """Restore ``train_step`` in place from ``path`` (``contents``: its ``read``, if done); returns the step
        to continue from."""
        path = Path(path)
        step, saved_base, state = self.read(path) if contents is None else contents
        if saved_base is not None and saved_base != str(base_weights):
            raise CheckpointError(f"{path}: trained on base weights '{saved_base}', this run uses '{base_weights}'")
        expected = {p.name for p in _kept(train_step, exclude)}
        missing = sorted(expected - set(state))
        if missing:
            raise CheckpointError(f"{path}: {len(missing)} training tensors missing, e.g. {missing[:3]}; "
                                  "was it written with another training config?")
        ms.load_param_into_net(train_step, {k: v for k, v in state.items() if k in expected}, strict_load=True)
        return step
