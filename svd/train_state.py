"""Training checkpoints: atomic, the latest ``keep`` retained, everything needed to resume exactly.

A checkpoint holds the trainable weights, the optimizer moments and step, the accumulation
buffers, the loss-scale state and the EMA weights — not the frozen backbone, which comes from the
pretrained weights named in the checkpoint (or, for random-weight runs, is stored too).
"""
import re
from pathlib import Path

import mindspore as ms

from svd.checkpoint import CheckpointError, atomic_write

STEP_FILE = re.compile(r"^step_(\d{8})\.ckpt$")
# Derived from the config at start-up rather than restored, so a resumed run may change its length.
DERIVED = {"learning_rate"}


def _kept(train_step, exclude):
    return [p for p in train_step.get_parameters() if p.name not in exclude and p.name not in DERIVED]


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

    def save(self, train_step, step, exclude, base_weights):
        params = [{"name": p.name, "data": p} for p in _kept(train_step, exclude)]
        path = self.path(step)
        atomic_write(path, lambda tmp: ms.save_checkpoint(params, tmp, append_dict={
            "step": step, "base_weights": base_weights}))
        for _, old in self.saved()[:-self.keep]:
            old.unlink()
        return path

    @staticmethod
    def load(path, train_step, exclude, base_weights):
        """Restore ``train_step`` in place; returns the step to continue from."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"resume checkpoint '{path}' does not exist")
        state = ms.load_checkpoint(str(path))
        if "step" not in state:
            raise CheckpointError(f"{path}: not a training checkpoint (no 'step' entry)")
        step = int(state.pop("step").asnumpy())
        saved_base = state.pop("base_weights", None)
        if saved_base is not None and str(saved_base) != str(base_weights):
            raise CheckpointError(f"{path}: trained on base weights '{saved_base}', this run uses '{base_weights}'")
        expected = {p.name for p in _kept(train_step, exclude)}
        missing = sorted(expected - set(state))
        if missing:
            raise CheckpointError(f"{path}: {len(missing)} training tensors missing, e.g. {missing[:3]}; "
                                  "was it written with another training config?")
        ms.load_param_into_net(train_step, {k: v for k, v in state.items() if k in expected}, strict_load=True)
        return step
