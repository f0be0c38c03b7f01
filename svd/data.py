"""Video clips listed in a CSV (``path,length,motion_bucket_id``) for temporal fine-tuning.

A clip is ``num_frames`` frames taken every ``frame_stride`` frames from a random start,
resized to cover ``height x width`` and centre-cropped; with ``crop`` a random patch of that
(the same for every frame: an autoencoder learns as well from patches, at a fraction of the cost). Missing or
undecodable videos are skipped (and counted), never fatal, as long as one video in the list can be read; a video
shorter than its CSV ``length`` is re-measured and used with the frames it has.
"""
import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

CSV_COLUMNS = ("path", "length", "motion_bucket_id")
log = logging.getLogger(__name__)


def read_metadata(csv_path):
    """The CSV as a DataFrame; one-line errors name the file and what is wrong."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"metadata CSV '{csv_path}' does not exist")
    try:
        table = pd.read_csv(csv_path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{csv_path}: empty file; expected a header {','.join(CSV_COLUMNS)} and one row per video "
                         "(svd_tools/make_metadata.py writes it)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{csv_path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    absent = [c for c in CSV_COLUMNS if c not in table.columns]
    if absent:
        raise ValueError(f"{csv_path}: missing column(s) {absent}; expected header {','.join(CSV_COLUMNS)}")
    if table.empty:
        raise ValueError(f"{csv_path}: lists no videos (only a header)")
    for column in ("length", "motion_bucket_id"):
        values = pd.to_numeric(table[column], errors="coerce")
        bad = table.index[values.isna()].tolist()
        if bad:
            raise ValueError(f"{csv_path}: column '{column}' must be numeric, bad value on data row {bad[0] + 1}")
        table[column] = values
    negative = table.index[(table["length"] < 0) | (table["motion_bucket_id"] < 0)].tolist()
    if negative:
        raise ValueError(f"{csv_path}: 'length' and 'motion_bucket_id' must be >= 0, negative on data row "
                         f"{negative[0] + 1}")
    return table


def resize_cover_crop(frame, height, width):
    """Resize so the frame covers ``height x width`` (area filter when shrinking), then centre-crop."""
    h, w = frame.shape[:2]
    scale = max(height / h, width / w)
    size = (max(width, round(w * scale)), max(height, round(h * scale)))
    frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    top, left = (size[1] - height) // 2, (size[0] - width) // 2
    return frame[top:top + height, left:left + width]


def read_frames(path, start, count, stride):
    """``count`` RGB frames every ``stride`` frames from ``start``, and the video fps; None if unreadable."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None, 0.0
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        if start:
            capture.set(cv2.CAP_PROP_POS_FRAMES, start)
        frames = []
        index = 0
        while len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                return None, fps
            if index % stride == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
        return frames, fps
    finally:
        capture.release()


def count_frames(path):
    """Frames that actually decode (the CSV's ``length`` may be wrong, container counts often are)."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        count = 0
        while capture.grab():
            count += 1
        return count
    finally:
        capture.release()


class VideoClips:
    """Random-access clips; ``clip(index, rng)`` returns a dict of float32 arrays."""

    def __init__(self, csv_path, num_frames, frame_stride, height, width, root=None, default_fps=25.0, crop=None):
        table = read_metadata(csv_path)
        root_given = bool(root)
        root = Path(root) if root else Path(csv_path).resolve().parent
        if root_given and not root.is_dir():
            raise FileNotFoundError(f"data.root '{root}' (where {csv_path}'s videos are) is not a folder")
        span = (num_frames - 1) * frame_stride + 1
        long_enough = table["length"] >= span
        self.too_short = int((~long_enough).sum())
        table = table[long_enough].reset_index(drop=True)
        if table.empty:
            raise ValueError(f"{csv_path}: no video has the {span} frames that num_frames={num_frames}, "
                             f"frame_stride={frame_stride} need")
        self.paths = [p if Path(p).is_absolute() else root / p for p in table["path"]]
        if not any(Path(p).is_file() for p in self.paths):
            raise FileNotFoundError(f"{csv_path}: none of its {len(self.paths)} videos exist (e.g. '{self.paths[0]}'; "
                                    f"relative paths resolve against {'data.root' if root_given else 'the CSV folder'} "
                                    f"'{root}')")
        self.csv_path = csv_path
        self.lengths = table["length"].astype(int).tolist()
        self.motion = table["motion_bucket_id"].astype(np.float32).tolist()
        self.num_frames, self.stride, self.span = num_frames, frame_stride, span
        self.height, self.width, self.default_fps = height, width, default_fps
        self.crop = tuple(crop) if crop else None
        if self.crop and not (0 < self.crop[0] <= height and 0 < self.crop[1] <= width):
            raise ValueError(f"data.crop {list(self.crop)} must fit inside data.height x data.width {height}x{width}")
        self.unreadable = set()
        self.measured = {}  # index -> frames that decode, for videos shorter than the CSV says

    def __len__(self):
        return len(self.paths)

    @property
    def skipped(self):
        """Number of distinct videos skipped because they could not be read."""
        return len(self.unreadable)

    def _load(self, index, rng):
        # The start is drawn against the CSV's length, then folded into the measured length when the video
        # turned out shorter: the same draw and result whether or not this process measured it before (resume).
        start = int(rng.integers(0, self.lengths[index] - self.span + 1))
        if index in self.measured:
            start %= self.measured[index] - self.span + 1
        frames, fps = read_frames(self.paths[index], start, self.num_frames, self.stride)
        if frames is None and index not in self.measured and Path(self.paths[index]).is_file():
            real = count_frames(self.paths[index])
            if self.span <= real < self.lengths[index]:
                log.warning("'%s' has %d readable frames, not the %d its CSV row says; using %d", self.paths[index],
                            real, self.lengths[index], real)
                self.measured[index] = real
                start %= real - self.span + 1
                frames, fps = read_frames(self.paths[index], start, self.num_frames, self.stride)
        if frames is None:
            return None
        video = np.stack([resize_cover_crop(f, self.height, self.width) for f in frames])
        if self.crop:
            top = int(rng.integers(0, self.height - self.crop[0] + 1))
            left = int(rng.integers(0, self.width - self.crop[1] + 1))
            video = video[:, top:top + self.crop[0], left:left + self.crop[1]]
        video = video.astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1.0
        fps = fps if fps > 0 else self.default_fps
        return {"frames": video, "fps_id": np.float32(fps / self.stride - 1.0),
                "motion_bucket_id": np.float32(self.motion[index])}

    def clip(self, index, rng):
        """The clip at ``index``, or the next readable one; raises only if none can be read."""
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            if candidate in self.unreadable:
                # The draw a failed read consumed, so a later clip gets the same draws in a resumed run, which
                # has not yet learnt that this video is unreadable.
                rng.integers(0, self.lengths[candidate] - self.span + 1)
                continue
            sample = self._load(candidate, rng)
            if sample is not None:
                return sample
            self.unreadable.add(candidate)
            log.warning("skipping unreadable video '%s' (%d skipped so far)", self.paths[candidate], self.skipped)
        raise ValueError(f"{self.csv_path}: none of its {len(self)} videos could be read (missing, undecodable, or "
                         f"shorter than the {self.span} frames a clip needs)")


def epoch_order(num_items, seed, epoch):
    """The shuffled visiting order of one epoch, a pure function of (seed, epoch) so resume is exact."""
    return np.random.default_rng([seed, epoch]).permutation(num_items)
