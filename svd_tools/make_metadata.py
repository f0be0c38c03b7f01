"""Build the training CSV (``path,length,motion_bucket_id``) from a folder of videos.

Length is the number of frames that actually decode. The motion bucket comes from dense
Farneback optical flow: frames are sampled about ``--sample-fps`` times a second, resized to
256 px wide, and the mean flow magnitude (pixels per sampled step at that width) m gives
``motion_bucket_id = min(255, round(m * --pixels-to-bucket))``. The default 32 maps 4 px of
mean motion to SVD's default bucket 127 (our calibration: SVD's own mapping is unpublished).

    python -m svd_tools.make_metadata videos/ --output videos/metadata.csv
    python -m svd_tools.make_metadata videos/ --output lists/train.csv   # paths become ../videos/...

An existing CSV is replaced only with --overwrite.
"""
import argparse
import csv
import os
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.io.checkpoint import atomic_write
from svd.io.schema import check_output_file, check_positive

VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".gif"}
FLOW_WIDTH = 256


def motion_statistics(path, sample_fps=4.0):
    """(decoded frame count, mean Farneback flow magnitude); count 0 if the video cannot be decoded."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        return 0, 0.0
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, round(fps / sample_fps))
    count, previous, magnitudes = 0, None, []
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if count % step == 0:
                h, w = frame.shape[:2]
                gray = cv2.cvtColor(cv2.resize(frame, (FLOW_WIDTH, max(1, round(h * FLOW_WIDTH / w)))),
                                    cv2.COLOR_BGR2GRAY)
                if previous is not None:
                    flow = cv2.calcOpticalFlowFarneback(previous, gray, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                    magnitudes.append(float(np.linalg.norm(flow, axis=-1).mean()))
                previous = gray
            count += 1
    finally:
        capture.release()
    return count, float(np.mean(magnitudes)) if magnitudes else 0.0


def motion_bucket(mean_magnitude, pixels_to_bucket=32.0):
    return int(min(255, round(mean_magnitude * pixels_to_bucket)))


def build_metadata(folder, output, sample_fps=4.0, pixels_to_bucket=32.0, overwrite=False):
    """Write the CSV; returns (rows written, paths skipped because they do not decode).

    Paths are relative to the CSV's own folder (where the training loader resolves them), wherever
    ``output`` is. An existing ``output`` is an error unless ``overwrite``; all checks come before
    any video is measured.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"video folder '{folder}' does not exist")
    if not folder.is_dir():
        raise NotADirectoryError(f"video folder '{folder}' is a file, not a folder")
    for name, value in (("--sample-fps", sample_fps), ("--pixels-to-bucket", pixels_to_bucket)):
        check_positive(name, value, allow_none=False)
    output = Path(output)
    check_output_file(output, "--output", overwrite)
    videos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise ValueError(f"no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) under '{folder}'")
    base = output.absolute().parent
    rows, skipped = [], []
    for path in tqdm(videos, desc="measuring motion"):
        length, magnitude = motion_statistics(path, sample_fps)
        if length < 2:
            skipped.append(path)
            continue
        rows.append((Path(os.path.relpath(path.absolute(), base)).as_posix(), length,
                     motion_bucket(magnitude, pixels_to_bucket)))
    if not rows:
        raise ValueError(f"none of the {len(videos)} videos under '{folder}' decode to 2 or more frames "
                         f"(e.g. '{skipped[0]}'); no CSV written")

    def write(tmp):
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "length", "motion_bucket_id"])
            writer.writerows(rows)
    atomic_write(output, write)
    return rows, skipped


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder")
    p.add_argument("--output", help="CSV path (default: FOLDER/metadata.csv); paths are relative to the CSV's folder")
    p.add_argument("--sample-fps", type=float, default=4.0)
    p.add_argument("--pixels-to-bucket", type=float, default=32.0)
    p.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    args = p.parse_args(argv)
    output = args.output or Path(args.folder) / "metadata.csv"
    rows, skipped = build_metadata(args.folder, output, args.sample_fps, args.pixels_to_bucket, args.overwrite)
    print(f"wrote {len(rows)} videos to {output}; skipped {len(skipped)} that do not decode")
    for path in skipped:
        print(f"  skipped: {path}")


if __name__ == "__main__":
    run_cli(main)
