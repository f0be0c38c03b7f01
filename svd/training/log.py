"""The training log: one CSV row per step with a header, exact across kill + resume, and a loss-curve PNG.

Rows are written as steps finish, before the checkpoint they belong to, so a killed run leaves rows
past its last checkpoint; resuming drops them first, so every step appears once.
"""
import csv
from pathlib import Path

import numpy as np

COLUMNS = ["step", "loss", "overflow", "loss_scale", "weight_norm"]


class TrainingLog:
    def __init__(self, path, resume_step):
        self.path = Path(path)
        rows = self.rows() if resume_step else []
        kept = [r for r in rows if int(r["step"]) <= resume_step]
        self._handle = open(self.path, "w", newline="")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(COLUMNS)
        self._writer.writerows([r[c] for c in COLUMNS] for r in kept)
        self._handle.flush()

    def rows(self):
        """The rows on disk as dicts (a log without our header yields nothing)."""
        if not self.path.is_file():
            return []
        with open(self.path, newline="") as handle:
            reader = csv.DictReader(handle)
            return list(reader) if reader.fieldnames == COLUMNS else []

    def write(self, step, loss, overflow, scale, weight_norm):
        self._writer.writerow([step, f"{loss:.6f}", overflow, scale, f"{weight_norm:.10e}"])
        self._handle.flush()

    def close(self):
        self._handle.close()

    def plot(self, png_path, title):
        """Loss per step (light) and its running mean over 50 steps, log scale."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        steps = np.array([int(r["step"]) for r in rows])
        loss = np.array([float(r["loss"]) for r in rows])
        window = min(50, len(loss))
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        figure, axis = plt.subplots(figsize=(6, 3.2), dpi=100)
        axis.plot(steps, loss, color="#9ecae1", linewidth=0.6, label="loss")
        axis.plot(steps[window - 1:], smooth, color="#08519c", linewidth=1.5, label=f"mean of {window}")
        axis.set_yscale("log")
        axis.set_xlabel("step")
        axis.set_title(title)
        axis.legend()
        figure.tight_layout()
        figure.savefig(png_path)
        plt.close(figure)
