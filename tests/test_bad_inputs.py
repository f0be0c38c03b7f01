"""Bad inputs to the four tools: each ends in one line, `error: ...`, that names the file, key or value and
what was expected, and writes nothing. The tools' main() runs in-process under svd.cli.run_cli, as from a
shell; an exception run_cli does not turn into one line (a traceback) fails the test. Most cases fail
before any model is built."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import image_to_video
import train
from svd.cli import run_cli
from svd_tools import convert, make_metadata

ROOT = Path(__file__).resolve().parent.parent
TRAIN_TINY = str(ROOT / "configs" / "train_tiny.yaml")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_model, clips_csv):
    """Good and bad inputs, made once: ``{name}`` placeholders in the cases below are these paths."""
    d = tmp_path_factory.mktemp("inputs")
    shutil.copy(ROOT / "assets" / "demo.png", d / "demo.png")
    (d / "notes.txt").write_text("hello")
    (d / "empty.png").write_bytes(b"")
    state = {p.name: p.asnumpy() for p in tiny_model.get_parameters()}
    save_file(state, str(d / "tiny.safetensors"))
    nan = dict(state)
    nan["unet.out.2.bias"] = nan["unet.out.2.bias"].copy()
    nan["unet.out.2.bias"][1] = np.nan
    save_file(nan, str(d / "nan.safetensors"))
    data = (d / "tiny.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(data[:len(data) * 3 // 5])
    (d / "empty.safetensors").write_bytes(b"")
    (d / "text.safetensors").write_text("not a checkpoint at all, but long enough to have a header size")
    save_file({"foo.weight": np.zeros(3, np.float32)}, str(d / "alien.safetensors"))
    (d / "garbage.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (d / "weights.pt").write_bytes(b"PK\x03\x04")
    (d / "bad.yaml").write_text("model:\n  unet: [1, 2\nsampling: {}\n")
    (d / "list.yaml").write_text("- a\n- b\n")
    (d / "empty.yaml").write_text("")
    tiny_yaml = (ROOT / "configs" / "svd_tiny.yaml").read_text()
    (d / "fps0.yaml").write_text(tiny_yaml.replace("  fps: 7", "  fps: 0"))
    (d / "channels0.yaml").write_text(tiny_yaml.replace("model_channels: 32", "model_channels: 0"))
    (d / "train_bad.yaml").write_text(Path(TRAIN_TINY).read_text().replace("  every: 10", "  every: ten"))
    header = "path,length,motion_bucket_id\n"
    (d / "empty.csv").write_text("")
    (d / "header.csv").write_text(header)
    (d / "nocolumn.csv").write_text("path,length\nbikes.mp4,10\n")
    (d / "nonnumeric.csv").write_text(header + "bikes.mp4,ten,3\n")
    (d / "negative.csv").write_text(header + "bikes.mp4,-4,3\n")
    (d / "missing.csv").write_text(header + "gone1.mp4,100,3\ngone2.mp4,100,3\n")
    (d / "short.csv").write_text(header + f"{Path(clips_csv).parent / 'bikes.mp4'},3,3\n")
    (d / "afile").write_text("a file, not a folder")
    (d / "a.mp4").mkdir()
    (d / "old.mp4").write_bytes(b"an earlier video")
    (d / "oldframes").mkdir()
    (d / "oldframes" / "frame_0000.png").write_bytes(b"an earlier frame")
    (d / "previous").mkdir()
    (d / "previous" / "step_00000004.ckpt").write_bytes(b"x")
    (d / "ckpt_dir.ckpt").write_bytes(b"x")
    (d / "full").mkdir()
    (d / "full" / "x.txt").write_text("x")
    (d / "novideos").mkdir()
    (d / "novideos" / "readme.txt").write_text("x")
    (d / "fakevideos").mkdir()
    (d / "fakevideos" / "clip.mp4").write_text("not a video")
    (d / "clips").mkdir()
    shutil.copy(Path(clips_csv).parent / "bikes.mp4", d / "clips" / "bikes.mp4")
    (d / "clips" / "metadata.csv").write_text("existing")
    (d / "diffusers").mkdir()
    (d / "diffusers" / "vae").mkdir()
    (d / "lora_bad.safetensors").write_bytes(b"")
    return {"dir": str(d), "dirname": d.name, "csv": str(clips_csv),
            **{p.name.replace(".", "_"): str(p) for p in d.iterdir()}}


def merged(base, extra):
    """``base`` arguments with the options of ``extra`` replacing theirs (flags have no value)."""
    def options(argv):
        found, i = {}, 0
        while i < len(argv):
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                found[argv[i]], i = argv[i + 1], i + 2
            else:
                found[argv[i]], i = None, i + 1
        return found
    out = []
    for key, value in {**options(base), **options(extra)}.items():
        out += [key] if value is None else [key, value]
    return out


def fill(args, files, out):
    return [a.format(out=out, **files) for a in args]


def one_line_error(main, argv):
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: main(argv))
    message = info.value.code
    assert isinstance(message, str) and message.startswith("error: "), message
    assert "\n" not in message.strip(), f"not one line: {message!r}"
    assert "Traceback" not in message
    return message


def check(main, argv, expected, files, out):
    message = one_line_error(main, fill(argv, files, out))
    for part in expected:
        part = part.format(out=out, **files)
        assert part in message, f"{part!r} not in {message!r}"
    return message


def nothing_written(out, before=()):
    out = Path(out)
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == sorted(before), \
        f"written: {sorted(p.name for p in out.iterdir())}"


# --- train.py -----------------------------------------------------------------------------------------------------

TRAIN = ["--config", TRAIN_TINY, "--random-weights", "data.csv={csv}", "checkpoint.dir={out}/run",
         "runtime.mode=pynative"]

TRAIN_CASES = {
    "config missing": (["--config", "{out}/nope.yaml"], ["training config", "nope.yaml' does not exist"]),
    "config malformed": (["--config", "{bad_yaml}"], ["bad.yaml: not valid YAML at line"]),
    "config a list": (["--config", "{list_yaml}"], ["list.yaml: expected a YAML mapping"]),
    "config empty": (["--config", "{empty_yaml}"], ["empty.yaml", "an empty file"]),
    "config value non-numeric": (["--config", "{train_bad_yaml}"],
                                 ["train_bad.yaml: checkpoint.every must be an integer >= 1, got 'ten'"]),
    "override without =": (["train.steps"], ["override 'train.steps' must be KEY=VALUE"]),
    "override empty key": (["=5"], ["override '=5' has an empty key"]),
    "override unknown key": (["train.stepz=3"], ["override 'train.stepz' is not a key of", "train_tiny.yaml"]),
    "steps zero": (["train.steps=0"], ["train_tiny.yaml: train.steps must be an integer >= 1, got 0"]),
    "steps negative": (["train.steps=-3"], ["train.steps must be an integer >= 1, got -3"]),
    "steps text": (["train.steps=many"], ["train.steps must be an integer >= 1, got 'many'"]),
    "steps fractional": (["train.steps=2.5"], ["train.steps must be an integer >= 1, got 2.5"]),
    "every zero": (["checkpoint.every=0"], ["checkpoint.every must be an integer >= 1, got 0"]),
    "every negative": (["checkpoint.every=-10"], ["checkpoint.every must be an integer >= 1, got -10"]),
    "keep zero": (["checkpoint.keep=0"], ["checkpoint.keep must be an integer >= 1, got 0"]),
    "accumulation zero": (["train.accumulation_steps=0"], ["train.accumulation_steps must be an integer >= 1, got 0"]),
    "accumulation text": (["train.accumulation_steps=x"], ["train.accumulation_steps must be an integer", "'x'"]),
    "accumulation over steps": (["train.steps=1", "train.accumulation_steps=2"],
                                ["train.steps (1) must be >= train.accumulation_steps (2)"]),
    "batch zero": (["data.batch_size=0"], ["data.batch_size must be an integer >= 1, got 0"]),
    "batch text": (["data.batch_size=two"], ["data.batch_size must be an integer >= 1, got 'two'"]),
    "lr negative": (["optimizer.lr=-1e-4"], ["optimizer.lr must be a number >= 0, got -0.0001"]),
    "lr text": (["optimizer.lr=fast"], ["optimizer.lr must be a number >= 0, got 'fast'"]),
    "lr nan": (["optimizer.lr=nan"], ["optimizer.lr must be a number >= 0, got"]),
    "end lr negative": (["optimizer.end_lr=-1"], ["optimizer.end_lr must be a number >= 0, got -1"]),
    "eps zero": (["optimizer.eps=0"], ["optimizer.eps must be a number > 0, got 0"]),
    "warmup negative": (["optimizer.warmup_steps=-1"], ["optimizer.warmup_steps must be an integer >= 0, got -1"]),
    "betas one value": (["optimizer.betas=[0.9]"], ["optimizer.betas must be a list of 2 values", "got [0.9]"]),
    "betas out of range": (["optimizer.betas=[0.9,1.5]"], ["optimizer.betas must be a list of 2 values",
                                                          "[0.9, 1.5]"]),
    "weight decay negative": (["optimizer.weight_decay=-0.1"], ["optimizer.weight_decay must be a number >= 0"]),
    "ema decay one": (["train.ema_decay=1.0"], ["train.ema_decay must be a number >= 0 and < 1, got 1.0"]),
    "clip norm negative": (["train.clip_norm=-1"], ["train.clip_norm must be a number >= 0, got -1"]),
    "loss scale zero": (["train.loss_scale=0"], ["train.loss_scale must be a number > 0, got 0"]),
    "scale factor one": (["train.scale_factor=1"], ["train.scale_factor must be a number > 1, got 1"]),
    "scale window zero": (["train.scale_window=0"], ["train.scale_window must be an integer >= 1, got 0"]),
    "flag not boolean": (["train.dynamic_loss_scale=maybe"], ["train.dynamic_loss_scale must be true or false",
                                                              "'maybe'"]),
    "trainable unknown": (["train.trainable=everything"], ["train.trainable must be one of", "'everything'"]),
    "precision unknown": (["train.precision=fp8"], ["train.precision must be one of 'fp32', 'fp16', 'bf16'",
                                                    "'fp8'"]),
    "seed negative": (["train.seed=-1"], ["train.seed must be an integer >= 0 and < 4294967296, got -1"]),
    "mode unknown": (["runtime.mode=eager"], ["runtime.mode must be one of 'graph', 'pynative', got 'eager'"]),
    "jit level unknown": (["runtime.jit_level=O9"], ["runtime.jit_level must be one of", "'O9'"]),
    "memory budget zero": (["runtime.memory_budget_mb=0"], ["runtime.memory_budget_mb must be a number > 0"]),
    "sink size zero": (["runtime.sink_size=0"], ["runtime.sink_size must be an integer >= 1, got 0"]),
    "sink size not dividing": (["runtime.sink=true", "runtime.sink_size=3", "train.steps=4", "checkpoint.every=3"],
                               ["train.steps (4) must be a multiple of runtime.sink_size (3)"]),
    "num frames zero": (["data.num_frames=0"], ["data.num_frames must be an integer >= 1, got 0"]),
    "stride zero": (["data.frame_stride=0"], ["data.frame_stride must be an integer >= 1, got 0"]),
    "height zero": (["data.height=0"], ["data.height must be an integer >= 1, got 0"]),
    "height off multiple": (["data.height=100"], ["data.height must be a multiple of 64", "got 100"]),
    "crop too big": (["--config", str(ROOT / "configs" / "toy_vae.yaml"), "data.crop=[128,128]"],
                     ["toy_vae.yaml: data.crop [128, 128] must fit inside data.height x data.width 64x96"]),
    "lora rank zero": (["lora.rank=0"], ["lora.rank must be an integer >= 1, got 0"]),
    "model config unknown": (["model_config=svd_huge"], ["config 'svd_huge' not found"]),
    "model config with zero": (["model_config={channels0_yaml}"],
                               ["channels0.yaml: model.unet.model_channels must be a positive number, got 0"]),
    "csv missing": (["data.csv={out}/none.csv"], ["metadata CSV", "none.csv' does not exist"]),
    "csv empty": (["data.csv={empty_csv}"], ["empty.csv: empty file"]),
    "csv header only": (["data.csv={header_csv}"], ["header.csv: lists no videos"]),
    "csv column missing": (["data.csv={nocolumn_csv}"], ["nocolumn.csv: missing column(s) ['motion_bucket_id']"]),
    "csv length text": (["data.csv={nonnumeric_csv}"], ["nonnumeric.csv: column 'length' must be numeric",
                                                        "data row 1"]),
    "csv length negative": (["data.csv={negative_csv}"], ["negative.csv: 'length' and 'motion_bucket_id' must be "
                                                          ">= 0"]),
    "csv videos all missing": (["data.csv={missing_csv}"], ["missing.csv: none of its 2 videos exist",
                                                            "gone1.mp4"]),
    "csv videos too short": (["data.csv={short_csv}"], ["short.csv: no video has the 10 frames"]),
    "data root missing": (["data.root={out}/noroot"], ["data.root", "noroot' (where", "is not a folder"]),
    "checkpoint missing": (["--checkpoint", "{out}/base.safetensors"], ["--checkpoint", "base.safetensors' does not "
                                                                       "exist"]),
    "resume missing": (["--resume", "{out}/step_00000001.ckpt"], ["resume checkpoint", "does not exist"]),
    "resume not a ckpt": (["--resume", "{notes_txt}"], ["--resume", "notes.txt': expected a step_*.ckpt"]),
    "checkpoint dir is a file": (["checkpoint.dir={afile}"], ["checkpoint.dir", "afile' is an existing file"]),
    "checkpoint dir under a file": (["checkpoint.dir={afile}/run"], ["checkpoint.dir", "afile' is a file, not a "
                                                                     "folder"]),
    "checkpoint dir of another run": (["checkpoint.dir={previous}"], ["holds another run's checkpoints",
                                                                     "--resume auto"]),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_bad_input(case, files, tmp_path):
    extra, expected = TRAIN_CASES[case]
    if extra and extra[0] == "--config":
        argv = extra[:2] + TRAIN[2:] + extra[2:]
    elif extra and extra[0].startswith("--"):
        argv = TRAIN[:3] + extra[:2] + TRAIN[3:] + extra[2:]
        if extra[0] == "--checkpoint":
            argv.remove("--random-weights")
    else:
        argv = TRAIN + extra
    check(train.main, argv, expected, files, tmp_path)
    nothing_written(tmp_path / "run")


def test_train_init_section_without_its_weights(files, tmp_path):
    argv = ["--config", str(ROOT / "configs" / "toy_unet.yaml"), "data.csv={csv}", "checkpoint.dir={out}/run",
            "init.load.path={out}/vae.safetensors"]
    check(train.main, argv, ["init.load.path", "vae.safetensors' does not exist (train that stage first)"], files,
          tmp_path)
    nothing_written(tmp_path / "run")


# --- image_to_video.py --------------------------------------------------------------------------------------------

I2V = ["--random-weights", "--config", "svd_tiny", "--image", "{demo_png}", "--output", "{out}/v.mp4",
       "--num-steps", "1", "--num-frames", "2", "--no-progress"]

I2V_CASES = {
    "image missing": (["--image", "{out}/none.png"], ["image", "none.png' does not exist"]),
    "image not an image": (["--image", "{notes_txt}"], ["notes.txt' cannot be read as an image"]),
    "image empty": (["--image", "{empty_png}"], ["empty.png' cannot be read as an image"]),
    "fps zero": (["--fps", "0"], ["--fps must be an integer >= 1, got 0"]),
    "fps negative": (["--fps", "-5"], ["--fps must be an integer >= 1, got -5"]),
    "fps zero gif": (["--fps", "0", "--output", "{out}/v.gif"], ["--fps must be an integer >= 1, got 0"]),
    "motion bucket negative": (["--motion-bucket-id", "-1"], ["--motion-bucket-id must be an integer >= 0, got -1"]),
    "frames zero": (["--num-frames", "0"], ["--num-frames must be an integer >= 1, got 0"]),
    "steps zero": (["--num-steps", "0"], ["--num-steps must be an integer >= 1, got 0"]),
    "height zero": (["--height", "0"], ["--height must be an integer >= 1, got 0"]),
    "width negative": (["--width", "-64"], ["--width must be an integer >= 1, got -64"]),
    "decode chunk zero": (["--decode-chunk-size", "0"], ["--decode-chunk-size must be an integer >= 1, got 0"]),
    "noise aug negative": (["--noise-aug-strength", "-0.1"], ["--noise-aug-strength must be a number >= 0, got -0.1"]),
    "guidance negative": (["--min-guidance-scale", "-1"], ["--min-guidance-scale must be a number >= 0, got -1.0"]),
    "guidance nan": (["--max-guidance-scale", "nan"], ["--max-guidance-scale must be a number >= 0, got nan"]),
    "seed negative": (["--seed", "-1"], ["--seed must be an integer >= 0 and < 4294967296, got -1"]),
    "memory budget zero": (["--memory-budget-mb", "0"], ["--memory-budget-mb must be a number > 0, got 0"]),
    "output suffix": (["--output", "{out}/v.avi"], ["v.avi': expected a .mp4 or .gif file, a .png strip or a "
                                                    "folder"]),
    "output frames folder is a file": (["--output", "{afile}"], ["afile' is an existing file, where a folder of PNG"]),
    "output file is a folder": (["--output", "{a_mp4}"], ["a.mp4' is an existing folder, expected a .mp4 file"]),
    "output under a file": (["--output", "{afile}/v.mp4"], ["afile' is an existing file, not a folder"]),
    "output in an unwritable folder": (["--output", "/proc/v.mp4"], ["cannot write in '/proc'"]),
    "output exists": (["--output", "{old_mp4}"], ["old.mp4' exists; pass --overwrite to replace it"]),
    "output frames folder holds frames": (["--output", "{oldframes}"], ["oldframes' already holds frames; pass "
                                                                       "--overwrite"]),
    "checkpoint missing": (["--checkpoint", "{out}/none.safetensors"], ["--checkpoint", "none.safetensors' does not "
                                                                       "exist"]),
    "checkpoint empty": (["--checkpoint", "{empty_safetensors}"], ["empty.safetensors: not a safetensors file (empty"]),
    "checkpoint truncated": (["--checkpoint", "{truncated_safetensors}"], ["truncated.safetensors: truncated"]),
    "checkpoint text": (["--checkpoint", "{text_safetensors}"], ["text.safetensors: not a safetensors file"]),
    "checkpoint garbage ckpt": (["--checkpoint", "{garbage_ckpt}"], ["garbage.ckpt: not a plain MindSpore "
                                                                     "checkpoint"]),
    "checkpoint wrong type": (["--checkpoint", "{weights_pt}"], ["weights.pt: unsupported checkpoint type '.pt'"]),
    "checkpoint unknown layout": (["--checkpoint", "{alien_safetensors}"], ["alien.safetensors: matches no known "
                                                                            "layout", "'foo.weight'"]),
    "checkpoint with nan": (["--checkpoint", "{nan_safetensors}"], ["nan.safetensors: tensor 'unet.out.2.bias' has 1 "
                                                                    "NaN/Inf values"]),
    "checkpoint not a diffusers folder": (["--checkpoint", "{diffusers}"], ["diffusers: not a diffusers SVD folder",
                                                                            "unet/diffusion_pytorch_model"]),
    "config unknown": (["--config", "svd_huge"], ["config 'svd_huge' not found"]),
    "config malformed": (["--config", "{bad_yaml}"], ["bad.yaml: not valid YAML at line"]),
    "config fps zero": (["--config", "{fps0_yaml}"], ["fps0.yaml: sampling.fps must be an integer >= 1, got 0"]),
    "lora missing": (["--lora", "{out}/none.safetensors"], ["--lora", "none.safetensors' does not exist"]),
    "lora scale text": (["--lora", "{out}/x.safetensors:big"], ["scale 'big' is not a number"]),
    "merge lora without lora": (["--merge-lora"], ["--merge-lora needs at least one --lora"]),
    "height off multiple": (["--height", "100"], ["height/width must be positive multiples of 64, got 100x128"]),
}


@pytest.mark.parametrize("case", list(I2V_CASES))
def test_image_to_video_bad_input(case, files, tmp_path):
    extra, expected = I2V_CASES[case]
    argv = list(I2V)
    if "--checkpoint" in extra:
        argv = argv[1:]
        if extra[1] != "{out}/none.safetensors":
            argv = argv[2:]  # no --config: inferred from the checkpoint
    check(image_to_video.main, merged(argv, extra), expected, files, tmp_path)
    nothing_written(tmp_path)


# --- svd_tools/convert.py -----------------------------------------------------------------------------------------

CONVERT = ["--config", "svd_tiny", "--input", "{tiny_safetensors}", "--output", "{out}/out.ckpt"]

CONVERT_CASES = {
    "config unknown": (["--config", "svd_huge"], ["config 'svd_huge' not found"]),
    "config malformed": (["--config", "{bad_yaml}"], ["bad.yaml: not valid YAML"]),
    "input missing": (["--input", "{out}/none.safetensors"], ["--input", "none.safetensors' does not exist"]),
    "output is the input": (["--output", "{tiny_safetensors}"], ["tiny.safetensors' would overwrite the input"]),
    "output is the input with overwrite": (["--output", "{tiny_safetensors}", "--overwrite"],
                                           ["would overwrite the input"]),
    "output is the input via another path": (["--output", "{dir}/../{dirname}/tiny.safetensors"],
                                             ["would overwrite the input"]),
    "output exists": (["--output", "{notes_txt}.ckpt"], []),  # replaced below by a real existing file
    "stability as ckpt": (["--to", "stability", "--output", "{out}/sgm.ckpt"], ["sgm.ckpt': PyTorch cannot read a "
                                                                              "MindSpore .ckpt", ".safetensors"]),
    "output suffix": (["--output", "{out}/out.bin"], ["out.bin': expected a .safetensors or .ckpt file"]),
    "output is a folder": (["--output", "{a_mp4}.ckpt"], []),
    "output under a file": (["--output", "{afile}/out.ckpt"], ["afile' is an existing file, not a folder"]),
    "diffusers to a file": (["--to", "diffusers", "--output", "{out}/d.safetensors"], ["--to diffusers writes a "
                                                                                      "folder"]),
    "diffusers onto a file": (["--to", "diffusers", "--output", "{afile}"], ["afile' is an existing file"]),
    "diffusers into a full folder": (["--to", "diffusers", "--output", "{full}"], ["full' exists and is not empty; "
                                                                                  "pass --overwrite"]),
    "input empty": (["--input", "{empty_safetensors}"], ["empty.safetensors: not a safetensors file (empty"]),
    "input truncated": (["--input", "{truncated_safetensors}"], ["truncated.safetensors: truncated"]),
    "input garbage ckpt": (["--input", "{garbage_ckpt}"], ["garbage.ckpt: not a plain MindSpore checkpoint"]),
    "input with nan": (["--input", "{nan_safetensors}"], ["nan.safetensors: tensor 'unet.out.2.bias' has 1 NaN/Inf"]),
    "input wrong type": (["--input", "{weights_pt}"], ["weights.pt: unsupported checkpoint type '.pt'"]),
    "input unknown layout": (["--input", "{alien_safetensors}"], ["alien.safetensors: matches no known layout"]),
    "input not a diffusers folder": (["--input", "{diffusers}"], ["not a diffusers SVD folder"]),
    "lora missing": (["--lora", "{out}/none.safetensors"], ["--lora", "none.safetensors' does not exist"]),
    "lora scale text": (["--lora", "{out}/x.safetensors:big"], ["scale 'big' is not a number"]),
}


@pytest.mark.parametrize("case", list(CONVERT_CASES))
def test_convert_bad_input(case, files, tmp_path):
    extra, expected = CONVERT_CASES[case]
    if case == "output exists":
        (tmp_path / "old.ckpt").write_bytes(b"keep me")
        extra, expected = ["--output", "{out}/old.ckpt"], ["old.ckpt' exists; pass --overwrite to replace it"]
    if case == "output is a folder":
        (tmp_path / "folder.ckpt").mkdir()
        extra, expected = ["--output", "{out}/folder.ckpt"], ["folder.ckpt' is an existing folder"]
    before = sorted(p.name for p in tmp_path.iterdir())
    check(convert.main, merged(CONVERT, extra), expected, files, tmp_path)
    nothing_written(tmp_path, before)
    if case == "output exists":
        assert (tmp_path / "old.ckpt").read_bytes() == b"keep me"
    assert Path(files["tiny_safetensors"]).stat().st_size > 1000


# --- svd_tools/make_metadata.py -----------------------------------------------------------------------------------

METADATA_CASES = {
    "folder missing": (["{out}/none"], ["video folder", "none' does not exist"]),
    "folder is a file": (["{afile}"], ["video folder", "afile' is a file, not a folder"]),
    "no videos": (["{novideos}"], ["no videos (", "novideos'"]),
    "no video decodes": (["{fakevideos}", "--output", "{out}/m.csv"], ["none of the 1 videos under", "fakevideos'",
                                                                       "clip.mp4", "no CSV written"]),
    "output exists": (["{clips}"], ["metadata.csv' exists; pass --overwrite"]),
    "output is a folder": (["{clips}", "--output", "{a_mp4}"], ["a.mp4' is an existing folder"]),
    "output under a file": (["{clips}", "--output", "{afile}/m.csv"], ["afile' is an existing file, not a folder"]),
    "output deeper under a file": (["{clips}", "--output", "{afile}/sub/m.csv"], ["afile' is a file, not a folder"]),
    "sample fps zero": (["{clips}", "--output", "{out}/m.csv", "--sample-fps", "0"],
                        ["--sample-fps must be a number > 0, got 0.0"]),
    "sample fps negative": (["{clips}", "--output", "{out}/m.csv", "--sample-fps", "-4"],
                            ["--sample-fps must be a number > 0, got -4.0"]),
    "sample fps nan": (["{clips}", "--output", "{out}/m.csv", "--sample-fps", "nan"],
                       ["--sample-fps must be a number > 0, got nan"]),
    "pixels to bucket zero": (["{clips}", "--output", "{out}/m.csv", "--pixels-to-bucket", "0"],
                              ["--pixels-to-bucket must be a number > 0, got 0.0"]),
}


@pytest.mark.parametrize("case", list(METADATA_CASES))
def test_make_metadata_bad_input(case, files, tmp_path):
    argv, expected = METADATA_CASES[case]
    check(make_metadata.main, argv, expected, files, tmp_path)
    nothing_written(tmp_path)
    assert Path(files["clips"], "metadata.csv").read_text() == "existing"


def test_battery_size():
    assert len(TRAIN_CASES) + len(I2V_CASES) + len(CONVERT_CASES) + len(METADATA_CASES) + 1 >= 80


def test_every_shipped_config_passes_the_schema(capsys):
    """The schema accepts every YAML in configs/ without a warning, and knows every train.trainable choice."""
    from svd.io.config import load_config
    from svd.io.schema import TRAINABLE_CHOICES, check_train_config, load_yaml
    from svd.training.step import TRAINABLE

    assert set(TRAINABLE_CHOICES) == set(TRAINABLE)
    checked = 0
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        cfg = load_yaml(path)
        if "model" in cfg and "sampling" in cfg:
            load_config(path)
            checked += 1
        elif "train" in cfg:
            check_train_config(cfg, path)
            checked += 1
    assert checked >= 12 and "warning" not in capsys.readouterr().err
