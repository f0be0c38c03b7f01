"""Nothing lost, nothing silent: checksummed training checkpoints with fallback, crash leftovers cleaned up, a
SIGKILLed run resumed exactly in a new process, training checkpoints usable as weights, streamed sink
inputs, and inputs that used to give silently wrong results (EXIF orientation, CSV lengths, metadata paths)."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn
from PIL import Image
from safetensors.numpy import load_file, save_file

from svd.io.checkpoint import CheckpointError, CkptReader, atomic_write, load_weights, remove_stale_temporaries
from svd.training.state import CheckpointManager

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["runtime.mode=pynative", "data.num_frames=2", "data.width=64", "data.frame_stride=2",
         "optimizer.warmup_steps=1"]


class Holder(nn.Cell):
    """Stands in for a train step: float weights, optimizer-like moments and an int counter."""

    def __init__(self, offset=0.0):
        super().__init__()
        self.w = Parameter(Tensor(np.arange(4096, dtype=np.float32) + offset), name="unet.w")
        self.m = Parameter(Tensor(np.full(4096, 0.5 + offset, np.float32)), name="adam_m.unet.w")
        self.micro = Parameter(Tensor(3, ms.int32), name="micro_step")


def saved_steps(tmp_path, steps=(1, 2, 3)):
    manager = CheckpointManager(tmp_path, keep=5)
    for step in steps:
        manager.save(Holder(offset=float(step)), step, set(), "random:0")
    return manager


def tensor_span(path, name):
    offset, length = CkptReader(path).entries[name][2][0]
    return offset, length


def flip_byte(path, position):
    os.chmod(path, 0o600)
    data = bytearray(Path(path).read_bytes())
    data[position] ^= 0x5A
    Path(path).write_bytes(bytes(data))


def test_checkpoint_round_trip_restores_every_tensor(tmp_path):
    manager = saved_steps(tmp_path, [7])
    target = Holder(offset=100.0)
    assert manager.load(manager.path(7), target, set(), "random:0") == 7
    for name, param in [("w", target.w), ("m", target.m)]:
        np.testing.assert_array_equal(param.asnumpy(), getattr(Holder(offset=7.0), name).asnumpy())
    assert int(target.micro.asnumpy()) == 3


@pytest.mark.parametrize("where", [0.1, 0.5, 0.99])
def test_flipped_byte_inside_tensor_data_is_detected_and_skipped(tmp_path, capsys, where):
    manager = saved_steps(tmp_path)
    latest = manager.path(3)
    offset, length = tensor_span(latest, "unet.w")
    flip_byte(latest, offset + int(length * where))
    with pytest.raises(CheckpointError, match="step_00000003.ckpt: checksum mismatch"):
        manager.read(latest)
    path, (step, _, _) = manager.latest_intact()
    assert (path, step) == (manager.path(2), 2)
    warning = capsys.readouterr().err.strip()
    assert warning.count("\n") == 0 and "step_00000003.ckpt: checksum mismatch" in warning
    assert "falling back to the previous checkpoint" in warning


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.9999])
def test_truncated_latest_falls_back_to_the_previous_one(tmp_path, capsys, keep_fraction):
    manager = saved_steps(tmp_path)
    latest = manager.path(3)
    data = latest.read_bytes()
    os.chmod(latest, 0o600)
    latest.write_bytes(data[:int(len(data) * keep_fraction)])
    path, (step, _, _) = manager.latest_intact()
    assert step == 2 and path == manager.path(2)
    assert "step_00000003.ckpt" in capsys.readouterr().err


def test_no_intact_checkpoint_is_a_clear_error(tmp_path):
    manager = saved_steps(tmp_path, [1, 2])
    for _, path in manager.saved():
        offset, length = tensor_span(path, "adam_m.unet.w")
        flip_byte(path, offset + length // 2)
    with pytest.raises(CheckpointError, match=r"no intact checkpoint in .* to resume from: .*step_00000002.ckpt: "
                                              r"checksum mismatch.*step_00000001.ckpt: checksum mismatch"):
        manager.latest_intact()


def test_explicit_resume_of_a_damaged_checkpoint_is_an_error_not_a_fallback(tmp_path):
    manager = saved_steps(tmp_path, [1, 2])
    offset, length = tensor_span(manager.path(2), "unet.w")
    flip_byte(manager.path(2), offset + 8)
    with pytest.raises(CheckpointError, match="step_00000002.ckpt: checksum mismatch"):
        manager.load(manager.path(2), Holder(), set(), "random:0")


def test_checkpoint_without_checksum_loads_with_a_warning(tmp_path, capsys):
    holder = Holder(offset=1.0)
    path = tmp_path / "step_00000001.ckpt"
    ms.save_checkpoint([{"name": p.name, "data": p} for p in holder.get_parameters()], str(path),
                       append_dict={"step": 1, "base_weights": "random:0"})
    assert CheckpointManager(tmp_path).load(path, Holder(), set(), "random:0") == 1
    assert "has no checksum" in capsys.readouterr().err


def test_non_finite_weights_in_a_training_checkpoint_are_named(tmp_path):
    holder = Holder()
    holder.w.set_data(Tensor(np.full(4096, np.inf, np.float32)))
    manager = CheckpointManager(tmp_path)
    manager.save(holder, 1, set(), "random:0")
    with pytest.raises(CheckpointError, match="tensor 'unet.w' has 4096 NaN/Inf values"):
        manager.read(manager.path(1))


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "final.safetensors"
    save_file({"a": np.ones(3, np.float32)}, str(target))

    def crash(tmp):
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, crash)
    assert np.array_equal(load_file(str(target))["a"], np.ones(3, np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.safetensors"]


def test_sigkill_mid_save_leaves_only_a_temporary_that_the_next_run_removes(tmp_path):
    """A process killed inside atomic_write (after MindSpore wrote part of the file) leaves the previous
    checkpoint intact and a hidden partial file; clean_up removes exactly that kind of file."""
    script = (f"import os, signal\nfrom svd.io.checkpoint import atomic_write\n"
              f"def write(tmp):\n    open(tmp[:-5] + '.tmp', 'wb').write(b'partial')\n"
              f"    os.kill(os.getpid(), signal.SIGKILL)\n"
              f"atomic_write({str(tmp_path / 'step_00000002.ckpt')!r}, write)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True)
    assert done.returncode == -signal.SIGKILL
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert len(leftovers) == 2 and all(n.startswith(".step_00000002.ckpt.partial-") for n in leftovers), leftovers
    assert not (tmp_path / "step_00000002.ckpt").exists()
    for name in (".hidden_notes", ".step_00000002.ckpt.partial-x.tmp", "step_00000001.ckpt.partial-abcdefgh.tmp",
                 "notes.tmp"):
        (tmp_path / name).write_text("not ours")
    removed = CheckpointManager(tmp_path).clean_up()
    assert sorted(p.name for p in removed) == leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [".hidden_notes", ".step_00000002.ckpt.partial-x.tmp", "step_00000001.ckpt.partial-abcdefgh.tmp", "notes.tmp"])
    assert remove_stale_temporaries(tmp_path / "absent") == []


def train_command(clips_csv, out, *overrides, resume=False):
    return [sys.executable, str(ROOT / "train.py"), "--config", str(ROOT / "configs" / "train_tiny.yaml"),
            "--random-weights", f"data.csv={clips_csv}", f"checkpoint.dir={out}", *SMALL, *overrides] + \
        (["--resume", "auto"] if resume else [])


def log_rows(path):
    if not Path(path).is_file():
        return []
    with open(path) as handle:
        return list(csv.reader(handle))[1:]


KILL_SETTINGS = ["train.steps=4", "checkpoint.every=1", "train.accumulation_steps=2", "train.ema_decay=0.9"]


@pytest.fixture(scope="module")
def uninterrupted(clips_csv, tmp_path_factory):
    """The reference runs, one per mode, each in its own process."""
    runs = {}

    def run(mode):
        if mode not in runs:
            out = tmp_path_factory.mktemp(f"straight_{mode}")
            subprocess.run(train_command(clips_csv, out, *KILL_SETTINGS, f"runtime.mode={mode}"), cwd=ROOT, check=True,
                           capture_output=True)
            runs[mode] = out
        return runs[mode]
    return run


# When to kill: while step 2's checkpoint is being written (its hidden partial file exists: mid-checkpoint,
# after the step's log row; the resume continues from step 1, inside an accumulation window), or once step 3's
# checkpoint exists (step 4 and its log row under way: mid-step).
KILL_POINTS = {"mid-checkpoint": lambda out: out.is_dir() and any(p.name.startswith(".step_00000002.ckpt.partial-")
                                                                  for p in out.iterdir()),
               "mid-step": lambda out: (out / "step_00000003.ckpt").exists()}
# Graph mode compiles in each of the three processes: about 29 minutes on 2 busy CPU cores (passed, bit-exact,
# killed mid-checkpoint). Opt in with SVD_SLOW_TESTS=1.
SLOW = pytest.mark.skipif(not os.environ.get("SVD_SLOW_TESTS"), reason="graph-mode compiles: ~30 min; SVD_SLOW_TESTS=1")


@pytest.mark.parametrize("mode, when", [("pynative", "mid-checkpoint"), ("pynative", "mid-step"),
                                        pytest.param("graph", "mid-checkpoint", marks=SLOW)])
def test_sigkill_then_resume_auto_in_a_new_process_is_exact(uninterrupted, clips_csv, tmp_path, mode, when):
    """kill -9 during a run, then `--resume auto` in a new process: the same weights and the same log as an
    uninterrupted run, bit for bit (accumulation over 2 steps and EMA on, so every kind of state must survive)."""
    straight = uninterrupted(mode)
    killed = tmp_path / "killed"
    command = train_command(clips_csv, killed, *KILL_SETTINGS, f"runtime.mode={mode}")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 1200
    while not KILL_POINTS[when](killed) and process.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    left = sorted(p.name for p in killed.iterdir())
    print(f"killed {when}: {left}, {len(log_rows(killed / 'log_rank0.csv'))} log rows")
    assert "final.safetensors" not in left
    subprocess.run(command + ["--resume", "auto"], cwd=ROOT, check=True, capture_output=True)
    assert log_rows(killed / "log_rank0.csv") == log_rows(straight / "log_rank0.csv")
    a, b = load_file(str(straight / "final.safetensors")), load_file(str(killed / "final.safetensors"))
    assert set(a) == set(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert not [p for p in killed.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def fine_tuned(clips_csv, tiny_model, tmp_path_factory):
    """One temporal fine-tuning step from a base checkpoint, EMA on: the step checkpoint holds only the
    trainable weights (raw and EMA), the rest comes from the base file it names."""
    import train

    out = tmp_path_factory.mktemp("fine_tuned")
    base = out / "base.safetensors"
    save_file({p.name: p.asnumpy() for p in tiny_model.get_parameters()}, str(base))
    train.main(["--config", str(ROOT / "configs" / "train_tiny.yaml"), "--checkpoint", str(base),
                f"data.csv={clips_csv}", f"checkpoint.dir={out / 'run'}", *SMALL, "train.steps=1",
                "train.ema_decay=0.5", "optimizer.lr=1e-2"])
    return out / "run"


def test_training_checkpoint_loads_the_weights_it_holds(fine_tuned, tiny_cfg):
    from svd.io.config import build_model

    final = load_file(str(fine_tuned / "final.safetensors"))
    model = build_model(tiny_cfg, lazy=True)
    load_weights(model, fine_tuned / "step_00000001.ckpt", tiny_cfg.model)
    for param in model.get_parameters():
        np.testing.assert_array_equal(param.asnumpy(), final[param.name], err_msg=param.name)


def test_training_checkpoint_converts_and_samples(fine_tuned, tmp_path, monkeypatch):
    import image_to_video
    from svd_tools.convert import main as convert_main

    monkeypatch.chdir(ROOT)
    convert_main(["--config", "svd_tiny", "--input", str(fine_tuned / "step_00000001.ckpt"), "--output",
                  str(tmp_path / "weights.safetensors")])
    converted = load_file(str(tmp_path / "weights.safetensors"))
    final = load_file(str(fine_tuned / "final.safetensors"))
    assert set(converted) == set(final) and all(np.array_equal(converted[k], final[k]) for k in final)
    image_to_video.main(["--checkpoint", str(fine_tuned / "step_00000001.ckpt"), "--config", "svd_tiny",
                         "--num-steps", "1", "--num-frames", "2", "--no-progress", "--output", str(tmp_path / "v.gif")])
    assert (tmp_path / "v.gif").stat().st_size > 0


def test_convert_overwrites_only_when_told(tmp_path, tiny_model):
    from svd_tools.convert import main as convert_main

    source = tmp_path / "in.safetensors"
    save_file({p.name: p.asnumpy() for p in tiny_model.get_parameters()}, str(source))
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        convert_main(["--config", "svd_tiny", "--input", str(source), "--output", str(out)])
    assert out.read_bytes() == b"old"
    convert_main(["--config", "svd_tiny", "--input", str(source), "--output", str(out), "--overwrite"])
    assert CkptReader(out).shapes().keys() == load_file(str(source)).keys()


def test_sink_inputs_are_streamed_not_built_up_front():
    from svd.training.sink import StepStream, sink_dataset

    built = []

    def make(step):
        built.append(step)
        return np.full((2, 3), step, np.float32), np.array([step * 10], np.int32)
    stream = StepStream(make, 5, 9)
    assert built == [5] and len(stream) == 4 and stream.columns == 2
    iterator = iter(stream)
    first = next(iterator)
    assert built == [5] and first[0][0, 0] == 5
    second = next(iterator)
    assert built == [5, 6] and second[1][0] == 60
    assert [row[1][0] for row in iterator] == [70, 80] and built == [5, 6, 7, 8]
    built.clear()
    rows = [tuple(x.asnumpy() for x in row) for row in sink_dataset(make, 2, 5).create_tuple_iterator()]
    assert [int(r[1][0]) for r in rows] == [20, 30, 40] and all(r[0].shape == (2, 3) for r in rows)
    with pytest.raises(ValueError, match="no steps to stream"):
        StepStream(make, 3, 3)


def test_exif_orientation_is_applied(tmp_path):
    from svd.io.media import read_image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of the stored landscape pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = read_image(tmp_path / "photo.jpg")
    assert image.shape == (40, 20, 3)  # displayed as portrait
    assert image[:10].mean() > 200 and image[-10:].mean() < 50  # the band is now at the top


def test_metadata_written_elsewhere_resolves_to_the_videos(clips_csv, tmp_path):
    from svd.data import VideoClips
    from svd_tools.make_metadata import build_metadata

    output = tmp_path / "lists" / "train.csv"
    build_metadata(Path(clips_csv).parent, output)
    rows = list(csv.DictReader(open(output)))
    assert rows[0]["path"].startswith("../") and rows[0]["path"].endswith("bikes.mp4")
    clips = VideoClips(output, 2, 2, 64, 64)
    assert clips.clip(0, np.random.default_rng(0))["frames"].shape == (2, 3, 64, 64) and clips.skipped == 0


def test_csv_length_beyond_the_video_is_remeasured_not_blacklisted(clips_csv, tmp_path, caplog):
    from svd.data import VideoClips, count_frames, read_metadata

    real = int(read_metadata(clips_csv)["length"][0])
    video = Path(clips_csv).parent / "bikes.mp4"
    assert count_frames(video) == real
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(f"path,length,motion_bucket_id\n{video},{real + 500},10\n")
    clips = VideoClips(wrong, 2, 2, 32, 32)
    draws = [clips.clip(0, np.random.default_rng([3, k]))["frames"] for k in range(6)]
    assert clips.skipped == 0 and clips.measured == {0: real}
    assert "readable frames, not the" in caplog.text
    fresh = VideoClips(wrong, 2, 2, 32, 32)  # e.g. a resumed run: the same clips for the same draws
    for k in reversed(range(6)):
        np.testing.assert_array_equal(fresh.clip(0, np.random.default_rng([3, k]))["frames"], draws[k])


def test_numeric_strings_are_converted_and_unknown_keys_warned(tmp_path, capsys):
    from omegaconf import OmegaConf

    from svd.io.schema import check_train_config, load_yaml

    cfg = load_yaml(ROOT / "configs" / "train_tiny.yaml")
    OmegaConf.update(cfg, "optimizer.lr", "3e-5", merge=False)
    cfg.train.stepz = 4
    check_train_config(cfg, "x.yaml")
    assert cfg.optimizer.lr == 3e-5 and isinstance(cfg.optimizer.lr, float)
    assert "x.yaml: unknown key 'train.stepz' is ignored" in capsys.readouterr().err
