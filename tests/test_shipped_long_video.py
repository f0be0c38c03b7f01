"""The shipped toy models (models/svd_toy.safetensors and the interpolation delta over it) on the held-out cockatoo
clip, against issue 9's thresholds. Fewer sampling steps and a 17-frame interpolation keep this inside CI; the
README's numbers (65 frames, the config's steps, peak memory in fresh processes) come from
`python -m svd_tools.evaluate_long_video`, which also wrote the two images used here."""
from pathlib import Path

import numpy as np
import pytest

from svd.io.media import load_image
from svd.metrics import psnr
from svd.sampling.long_video import continuation_seams, seam_report
from svd_tools.evaluate_long_video import keyframe_scores, runner_for

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "assets" / "long_video"
STEPS = 4


@pytest.fixture(scope="module")
def runner():
    return runner_for(str(ROOT / "models" / "svd_toy.safetensors"), str(ROOT / "models" / "svd_toy_interp.safetensors"),
                      "svd_toy")


@pytest.fixture(scope="module")
def options(runner):
    return runner.base.defaults.updated(seed=42, num_steps=STEPS)


def held_out(which, options):
    """The first or last frame of the held-out clip at the model's resolution, in [0, 1]."""
    return load_image(IMAGES / f"cockatoo_3_{which}.png", options.height, options.width).astype(np.float32) / 255.0


def test_interpolated_video_keeps_its_keyframes(runner, options):
    _, scores = keyframe_scores(runner, held_out("first", options), options, num_frames=17)
    assert min(scores) >= 30.0, scores


def test_last_image_gives_both_ends(runner, options):
    first, last = held_out("first", options), held_out("last", options)
    video = runner.interpolate(first, 17, options, last_image=last, progress=False)
    assert len(video) == 17
    ends = psnr(video[0], first), psnr(video[-1], last)
    assert min(ends) >= 22.0, ends


def test_continuation_seams_do_not_jump(runner, options):
    length, overlap = runner.chunk_frames, 2
    frames = length + 2 * (length - overlap)  # three chunks
    video = runner.continue_video(held_out("first", options), frames, options, overlap=overlap, progress=False)
    assert len(video) == frames
    report = seam_report(video, continuation_seams(frames, length, overlap))
    assert report["ratio"] <= 2.0, report
