"""Conversion on tiny random checkpoints, both directions, through the real file formats."""
import shutil

import numpy as np
import pytest
from mindspore import Tensor
from safetensors.numpy import load_file, save_file

from svd.io.checkpoint import CheckpointError, load_weights, read_tensors
from svd.io.config import build_model
from svd_tools.convert import convert, main

torch = pytest.importorskip("torch")
reference = pytest.importorskip("tests.reference")


@pytest.fixture(scope="module")
def diffusers_folder(tmp_path_factory, tiny_model_cfg):
    """A diffusers folder written by diffusers/transformers themselves."""
    root = tmp_path_factory.mktemp("diffusers")
    modules = reference.build_reference(tiny_model_cfg)
    for seed, (name, module) in enumerate(zip(("unet", "vae", "image_encoder"), modules)):
        reference.randomize(module, seed + 10)
        module.save_pretrained(root / name)
    return root, modules


def test_diffusers_folder_to_mindspore_and_back(diffusers_folder, tiny_cfg, tmp_path):
    root, (unet, vae, image_encoder) = diffusers_folder
    ckpt = tmp_path / "tiny.ckpt"
    layout, report = convert("svd_tiny", root, ckpt)
    assert layout == "diffusers" and report.ok()
    model = build_model(tiny_cfg, lazy=True)
    load_weights(model, ckpt, tiny_cfg.model)
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = image_encoder(torch.from_numpy(pixels)).image_embeds.numpy()
    np.testing.assert_allclose(model.image_encoder(Tensor(pixels)).asnumpy(), expected, atol=1e-4)

    back = tmp_path / "back"
    convert("svd_tiny", ckpt, back, "diffusers")
    for name, module in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        for config in (root / name).glob("config.json"):
            shutil.copy(config, back / name / config.name)
        reloaded = type(module).from_pretrained(back / name)
        original = module.state_dict()
        for key, value in reloaded.state_dict().items():
            np.testing.assert_array_equal(value.numpy(), original[key].numpy(), err_msg=key)


def test_stability_single_file_round_trip(tiny_model, tmp_path):
    ours = tmp_path / "ours.safetensors"
    state = {p.name: p.asnumpy() for p in tiny_model.get_parameters()}
    save_file(state, str(ours))
    single = tmp_path / "stability.safetensors"
    convert("svd_tiny", ours, single, "stability")
    stability = load_file(str(single))
    assert "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight" in stability
    assert "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight" in stability
    stability["first_stage_model.encoder.conv_in.weight"] = stability[
        "conditioner.embedders.3.encoder.encoder.conv_in.weight"]
    save_file(stability, str(single))
    again = tmp_path / "again.ckpt"
    _, report = convert("svd_tiny", single, again)
    assert report.ignored == ["first_stage_model.encoder.conv_in.weight"]
    restored = read_tensors(again)
    assert set(restored) == set(state)
    for key, value in state.items():
        np.testing.assert_array_equal(restored[key], value, err_msg=key)


def _broken_copy(tiny_model, tmp_path, edit):
    state = {p.name: p.asnumpy() for p in tiny_model.get_parameters()}
    edit(state)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    return path


def test_missing_key_is_named(tiny_model, tmp_path):
    path = _broken_copy(tiny_model, tmp_path, lambda s: s.pop("unet.out.2.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing: unet\.out\.2\.bias"):
        convert("svd_tiny", path, tmp_path / "x.ckpt")
    assert not (tmp_path / "x.ckpt").exists()


def test_shape_mismatch_and_unexpected_key_are_named(tiny_model, tiny_cfg, tmp_path):
    def edit(state):
        state["unet.out.2.bias"] = np.zeros(5, np.float32)
        state["unet.extra.weight"] = np.zeros(1, np.float32)
    path = _broken_copy(tiny_model, tmp_path, edit)
    with pytest.raises(CheckpointError, match=r"unexpected: unet\.extra\.weight.*shape mismatch: unet\.out\.2\.bias"):
        load_weights(build_model(tiny_cfg, lazy=True), path, tiny_cfg.model)


def test_wrong_config_is_reported_not_crashed(diffusers_folder, tmp_path):
    root, _ = diffusers_folder
    with pytest.raises(CheckpointError, match="does not match config 'svd'"):
        convert("svd", root, tmp_path / "x.ckpt")


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--config", "svd_tiny", "--input", str(tmp_path / "nope.safetensors"), "--output", "x.ckpt"])
    with pytest.raises(FileNotFoundError, match="config 'nope' not found"):
        main(["--config", "nope", "--input", "x", "--output", "y"])


def test_safetensors_reader_equals_library_reader(tmp_path):
    """Our streaming reader returns what safetensors returns, for every dtype a checkpoint may hold."""
    from svd.io.checkpoint import SafetensorsReader
    rng = np.random.default_rng(0)
    state = {"a.f32": rng.standard_normal((3, 4)).astype(np.float32),
             "b.f16": rng.standard_normal((5,)).astype(np.float16),
             "c.i64": np.arange(6, dtype=np.int64).reshape(2, 3), "d.empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    reader = SafetensorsReader(path)
    assert reader.shapes() == {k: v.shape for k, v in state.items()}
    for key, ref in load_file(str(path)).items():
        got = reader.get(key)
        assert got.dtype == ref.dtype and np.array_equal(got, ref), key


def test_bf16_tensors_widen_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file
    from svd.io.checkpoint import SafetensorsReader
    values = torch.randn(7, 3).to(torch.bfloat16)
    save_file({"w": values}, str(tmp_path / "w.safetensors"))
    got = SafetensorsReader(tmp_path / "w.safetensors").get("w")
    assert got.dtype == np.float32 and np.array_equal(got, values.float().numpy())


def test_load_only_the_unet(tiny_cfg, tmp_path):
    """prefixes=("unet.",) loads the UNet from a full checkpoint and leaves the other networks alone."""
    from svd.io.checkpoint import save_tensors
    source = build_model(tiny_cfg, seed=3)
    state = {p.name: p.asnumpy() for p in source.get_parameters()}
    save_tensors(state, tmp_path / "all.safetensors")
    target = build_model(tiny_cfg, seed=4)
    before = {p.name: p.asnumpy() for p in target.get_parameters()}
    report = load_weights(target, tmp_path / "all.safetensors", tiny_cfg.model, prefixes=("unet.",))
    assert report.ok()
    for p in target.get_parameters():
        expected = state[p.name] if p.name.startswith("unet.") else before[p.name]
        assert np.array_equal(p.asnumpy(), expected), p.name


def test_dtype_fp16_halves_the_file_and_loads_back(tiny_model, tiny_cfg, tmp_path):
    """--dtype fp16 stores every float tensor in half precision; loading widens them to the model's fp32."""
    from svd.io.checkpoint import save_tensors
    state = {p.name: p.asnumpy() for p in tiny_model.get_parameters()}
    save_tensors(state, tmp_path / "full.safetensors")
    main(["--config", "svd_tiny", "--input", str(tmp_path / "full.safetensors"), "--output",
          str(tmp_path / "half.safetensors"), "--dtype", "fp16"])
    half = load_file(str(tmp_path / "half.safetensors"))
    assert {v.dtype for v in half.values()} == {np.dtype(np.float16)}
    assert (tmp_path / "half.safetensors").stat().st_size < 0.55 * (tmp_path / "full.safetensors").stat().st_size
    model = build_model(tiny_cfg, lazy=True)
    load_weights(model, tmp_path / "half.safetensors", tiny_cfg.model)
    for p in model.get_parameters():
        assert p.dtype == tiny_model.parameters_dict()[p.name].dtype
        np.testing.assert_array_equal(p.asnumpy(), state[p.name].astype(np.float16).astype(np.float32))
