"""Checkpoints users already hold and the released variants, on tiny weights each test writes in that layout:
mindone's examples/svd .ckpt, diffusers fp16 variants, mindone.diffusers folders, and the frame-wise
(image-decoder) VAE. Round trips must be exact; outputs against diffusers within the parity tolerance (1e-4)."""
import copy
import shutil
from pathlib import Path

import numpy as np
import pytest
from mindspore import Tensor
from omegaconf import OmegaConf
from safetensors.numpy import save_file

from svd.io.checkpoint import (CheckpointError, convert_to_ours, detect_layout, diffusers_weights, load_weights,
                               model_shapes, read_tensors, save_tensors)
from svd.io.config import build_model, load_config
from svd.io.layouts import STABILITY_IGNORED, mindone_name, stability_name
from svd_tools.convert import convert

torch = pytest.importorskip("torch")
reference = pytest.importorskip("tests.reference")

ATOL = 1e-4
# mindone's examples/svd parameter list (name, shape, dtype), copied from shared/reference/mindone_svd_keys.tsv.
MINDONE_KEYS = Path(__file__).parent / "fixtures" / "mindone_svd_keys.tsv"


def image_decoder_cfg(tmp_path):
    """The tiny config with the frame-wise decoder, also written as a YAML for the converter."""
    cfg = load_config("svd_tiny")
    cfg.model.vae.temporal_decoder = False
    path = tmp_path / "svd_tiny_image_decoder.yaml"
    OmegaConf.save(cfg, path)
    return cfg, path


def state_of(model):
    return {p.name: p.asnumpy() for p in model.get_parameters()}


def assert_weights_equal(model, state):
    assert {p.name for p in model.get_parameters()} == set(state)
    for p in model.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), state[p.name], err_msg=p.name)


def assert_close(ours, theirs):
    ours, theirs = ours.asnumpy(), theirs.detach().numpy()
    assert ours.shape == theirs.shape and np.abs(theirs).max() > 1e-2
    assert np.abs(ours - theirs).max() <= ATOL


def test_mindone_names_are_the_published_list():
    """All full-size SVD parameters land on mindone's names and shapes; its other 252 tensors are ones we ignore."""
    published = {}
    for line in MINDONE_KEYS.read_text().splitlines():
        name, shape, _ = line.split("\t")
        published[name] = tuple(int(d) for d in shape.strip("[]").split(",") if d)
    assert len(published) == 2446
    shapes = model_shapes(build_model(load_config("svd"), lazy=True))
    ours = {mindone_name(stability_name(k)): v for k, v in shapes.items()}
    assert {k: published.get(k) for k in ours} == ours
    rest = set(published) - set(ours)
    assert len(rest) == 252 and all(STABILITY_IGNORED.match(k) for k in rest)
    assert detect_layout(published) == "mindone"


def test_mindone_ckpt_loads_and_converts_both_ways(tiny_model, tiny_cfg, tmp_path):
    """ours -> --to mindone -> load / convert back, exact; with the tensors mindone files carry that we ignore."""
    state = state_of(tiny_model)
    save_tensors(state, tmp_path / "ours.ckpt")
    convert("svd_tiny", tmp_path / "ours.ckpt", tmp_path / "mindone.ckpt", "mindone")
    mindone = read_tensors(tmp_path / "mindone.ckpt")
    assert "model.diffusion_model.input_blocks.1.0.in_layers.0.gamma" in mindone
    assert "conditioner.embedders.0.open_clip.model.visual.ln_pre.beta" in mindone
    assert "first_stage_model.decoder.conv_out.conv3d.weight" in mindone
    assert not any(k.endswith((".norm1.weight", ".ln_1.bias", "time_mix_conv.weight")) for k in mindone)
    assert detect_layout(mindone) == "mindone"
    # What a real file also has: text-side leftovers, the first stage's encoder, an AMP-era "._backbone" infix.
    mindone["conditioner.embedders.0.open_clip.model.token_embedding.embedding_table"] = np.zeros((5, 4), np.float32)
    mindone["first_stage_model.encoder.norm_out.gamma"] = np.ones(4, np.float32)
    key = "model.diffusion_model.out.2.weight"
    mindone[key.replace("model.diffusion_model", "model.diffusion_model._backbone")] = mindone.pop(key)
    save_tensors(mindone, tmp_path / "svd-d19a808f.ckpt")

    model = build_model(tiny_cfg, lazy=True)
    report = load_weights(model, tmp_path / "svd-d19a808f.ckpt", tiny_cfg.model)
    assert sorted(report.ignored) == ["conditioner.embedders.0.open_clip.model.token_embedding.embedding_table",
                                      "first_stage_model.encoder.norm_out.gamma"]
    assert_weights_equal(model, state)
    layout, _ = convert("svd_tiny", tmp_path / "svd-d19a808f.ckpt", tmp_path / "back.ckpt")
    assert layout == "mindone"
    back = read_tensors(tmp_path / "back.ckpt")
    assert set(back) == set(state) and all(np.array_equal(back[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def reference_modules(tiny_model_cfg):
    modules = reference.build_reference(tiny_model_cfg)
    for seed, module in enumerate(modules):
        reference.randomize(module, seed + 20)
    return modules


def test_diffusers_fp16_variant_folder(reference_modules, tiny_cfg, tmp_path):
    """A folder saved with variant="fp16" loads to the fp16 values, and runs like the reference."""
    for name, module in zip(("unet", "vae", "image_encoder"), reference_modules):
        copy.deepcopy(module).half().save_pretrained(tmp_path / name, variant="fp16")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (tmp_path / "image_encoder" / "model.fp16.safetensors").is_file()
    state = reference.diffusers_state(*reference_modules)
    rounded = {k: v.astype(np.float16).astype(np.float32) for k, v in state.items()}
    expected, report = convert_to_ours(rounded, model_shapes(build_model(tiny_cfg, lazy=True)),
                                       OmegaConf.to_container(tiny_cfg.model, resolve=True))
    assert report.ok()

    model = build_model(tiny_cfg, lazy=True)
    load_weights(model, tmp_path, tiny_cfg.model)
    assert_weights_equal(model, expected)


def test_a_plain_file_wins_over_variants_and_two_variants_are_refused(tmp_path):
    (tmp_path / "vae").mkdir()
    for name in ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.bf16.safetensors"):
        (tmp_path / "vae" / name).touch()
    with pytest.raises(CheckpointError, match=r"expected vae/diffusion_pytorch_model\.safetensors or one variant.*"
                                              r"found diffusion_pytorch_model\.bf16\.safetensors, diffusion_pytorch"):
        diffusers_weights(tmp_path, "vae")
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").touch()
    assert diffusers_weights(tmp_path, "vae").name == "diffusion_pytorch_model.safetensors"


def mindspore_parameter_names(module):
    """``state_dict`` under the names a MindSpore port saves: mindone.transformers builds CLIP's LayerNorms and
    position embedding from MindSpore's nn.LayerNorm (gamma/beta) and nn.Embedding (embedding_table); buffers
    such as position_ids are not parameters there."""
    renames = {}
    for prefix, cell in module.named_modules():
        if isinstance(cell, torch.nn.LayerNorm):
            renames.update({f"{prefix}.weight": f"{prefix}.gamma", f"{prefix}.bias": f"{prefix}.beta"})
        elif isinstance(cell, torch.nn.Embedding):
            renames[f"{prefix}.weight"] = f"{prefix}.embedding_table"
    parameters = dict(module.named_parameters())
    return {renames.get(k, k): v.detach().numpy().copy() for k, v in parameters.items()}


def test_mindone_diffusers_folder(reference_modules, tiny_cfg, tmp_path):
    """mindone.diffusers saves unet/ and vae/ under diffusers' names and file names (its norms are mint's
    weight/bias), and image_encoder/model.safetensors under MindSpore cell names."""
    unet, vae, image_encoder = reference_modules
    unet.save_pretrained(tmp_path / "unet")
    vae.save_pretrained(tmp_path / "vae")
    (tmp_path / "image_encoder").mkdir()
    save_file(mindspore_parameter_names(image_encoder), str(tmp_path / "image_encoder" / "model.safetensors"),
              metadata={"format": "np"})
    model = build_model(tiny_cfg, lazy=True)
    report = load_weights(model, tmp_path, tiny_cfg.model)
    assert report.ok() and not report.ignored
    assert detect_layout(read_tensors(tmp_path)) == "mindone.diffusers"
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        assert_close(model.image_encoder(Tensor(pixels)), image_encoder(torch.from_numpy(pixels)).image_embeds)
    expected, _ = convert_to_ours(reference.diffusers_state(*reference_modules), model_shapes(model),
                                  OmegaConf.to_container(tiny_cfg.model, resolve=True))
    assert_weights_equal(model, expected)


def image_autoencoder(model_cfg):
    """diffusers' AutoencoderKL (plain 2-D decoder) at the size of ``model_cfg``'s VAE."""
    from diffusers import AutoencoderKL
    kwargs = reference.vae_kwargs(model_cfg["vae"])
    return AutoencoderKL(up_block_types=("UpDecoderBlock2D",) * len(kwargs["block_out_channels"]), **kwargs)


def test_frame_wise_decoder_matches_diffusers_autoencoder_kl(reference_modules, tmp_path):
    """temporal_decoder: false against AutoencoderKL on the same random weights, loaded from its own folder."""
    cfg, _ = image_decoder_cfg(tmp_path)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    unet, _, image_encoder = reference_modules
    vae = reference.randomize(image_autoencoder(model_cfg), 30)
    for name, module in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        module.save_pretrained(tmp_path / "folder" / name)
    model = build_model(cfg, lazy=True)
    assert load_weights(model, tmp_path / "folder", cfg.model).ok()
    assert not any("time_stack" in k or "mix_factor" in k for k in model_shapes(model) if k.startswith("vae."))

    rng = np.random.default_rng(1)
    latents = rng.standard_normal((3, 4, 8, 16)).astype(np.float32)
    with torch.no_grad():
        theirs = vae.decode(torch.from_numpy(latents / model.scale_factor)).sample
    frames = model.decode(Tensor(latents))
    assert_close(frames, theirs)
    # Frames decode independently (up to batch-size-dependent kernel rounding).
    np.testing.assert_allclose(model.decode(Tensor(latents[1:2])).asnumpy(), frames.asnumpy()[1:2], atol=1e-5)
    image = rng.uniform(-1, 1, (1, 3, 64, 128)).astype(np.float32)
    with torch.no_grad():
        mean = vae.encode(torch.from_numpy(image)).latent_dist.mean
    assert_close(model.condition_latent(Tensor(image)), mean)


@pytest.mark.parametrize("target", ["stability", "mindone", "diffusers"])
def test_frame_wise_decoder_round_trips(target, tmp_path):
    """ours -> target -> ours is exact; the Stability file also holds the first stage's encoder and quant_conv."""
    cfg, yaml = image_decoder_cfg(tmp_path)
    state = state_of(build_model(cfg, seed=5))
    save_tensors(state, tmp_path / "ours.safetensors")
    external = tmp_path / ("folder" if target == "diffusers" else f"{target}.safetensors")
    convert(yaml, tmp_path / "ours.safetensors", external, target)
    tensors = read_tensors(external)
    if target == "diffusers":
        assert {k[4:] for k in tensors if k.startswith("vae/")} == set(image_autoencoder(cfg.model).state_dict())
    else:
        assert "first_stage_model.post_quant_conv.weight" in tensors
        assert not any("time_" in k or "mix_factor" in k for k in tensors if k.startswith("first_stage_model."))
        tensors["first_stage_model.quant_conv.weight"] = np.zeros((8, 8, 1, 1), np.float32)
        tensors["first_stage_model.encoder.conv_in.bias"] = np.zeros(32, np.float32)
        save_file(tensors, str(external))
    model = build_model(cfg, lazy=True)
    load_weights(model, external, cfg.model)
    assert_weights_equal(model, state)


def test_temporal_checkpoint_does_not_load_as_frame_wise(tiny_model, tmp_path):
    cfg, _ = image_decoder_cfg(tmp_path)
    save_tensors(state_of(tiny_model), tmp_path / "temporal.safetensors")
    with pytest.raises(CheckpointError, match=r"temporal\.safetensors: does not match.*missing: vae\.post_quant_conv"):
        load_weights(build_model(cfg, lazy=True), tmp_path / "temporal.safetensors", cfg.model)


def test_unknown_layout_is_one_line_naming_the_file(tiny_cfg, tmp_path):
    save_file({"encoder.layer.0.weight": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CheckpointError) as err:
        load_weights(build_model(tiny_cfg, lazy=True), tmp_path / "other.safetensors", tiny_cfg.model)
    message = str(err.value)
    assert "\n" not in message and "other.safetensors: matches no known layout" in message
    assert "'model.diffusion_model.*'" in message and "'encoder.layer.0.weight'" in message
    shutil.rmtree(tmp_path / "empty", ignore_errors=True)
    (tmp_path / "empty" / "unet").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"empty: not a diffusers SVD folder: expected "
                                              r"unet/diffusion_pytorch_model\.safetensors .*found nothing"):
        read_tensors(tmp_path / "empty")


def test_released_variant_configs():
    """SVD-XT 1.1 is SVD-XT with 6 fps (fps_id 5) and motion bucket 127; the image-decoder releases differ
    from SVD / SVD-XT only in the frame-wise VAE decoder."""
    from svd.sampling.pipeline import SamplingOptions
    xt, xt11 = load_config("svd_xt"), load_config("svd_xt_1_1")
    assert xt11.model == xt.model
    options = SamplingOptions.from_config(xt11.sampling)
    assert (options.fps - 1, options.motion_bucket_id, options.num_frames) == (5, 127, 25)
    for base, variant in (("svd", "svd_image_decoder"), ("svd_xt", "svd_xt_image_decoder")):
        expected = load_config(base)
        expected.model.vae.temporal_decoder = False
        assert load_config(variant) == expected


def test_full_size_frame_wise_decoder_maps_onto_autoencoder_kl():
    """Every parameter of svd_image_decoder maps onto diffusers' published-size networks with AutoencoderKL."""
    from diffusers import AutoencoderKL

    from svd.io.checkpoint import match_keys
    cfg = load_config("svd_image_decoder")
    shapes = model_shapes(build_model(cfg, lazy=True))
    modules = reference.published_modules(num_frames=14)
    with torch.device("meta"):
        modules["vae"] = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                                       down_block_types=("DownEncoderBlock2D",) * 4,
                                       up_block_types=("UpDecoderBlock2D",) * 4)
    available = {f"{folder}/{k}": tuple(v.shape) for folder, m in modules.items() for k, v in m.state_dict().items()}
    plan, report = match_keys(available, shapes, OmegaConf.to_container(cfg.model, resolve=True), "diffusers")
    assert report.ok(), report.summary()
    assert len(plan) == len(shapes)


def test_ckpt_reader_equals_mindspore_loader(tmp_path, monkeypatch):
    """The header-scanning .ckpt reader returns what ms.load_checkpoint returns: every dtype a checkpoint may hold,
    0-d tensors, tensors saved in slices (forced small here; real files slice above 512 MB), the CRC trailer."""
    import mindspore as ms
    from mindspore.train import serialization

    from svd.io.checkpoint import CkptReader
    rng = np.random.default_rng(0)
    state = {"a.f32": rng.standard_normal((40, 30)).astype(np.float32),
             "b.f16": rng.standard_normal(5).astype(np.float16),
             "c.i64": np.arange(6, dtype=np.int64).reshape(2, 3), "d.i32": np.arange(3, dtype=np.int32),
             "e.scalar": np.array(2.5, np.float32), "f.flag": np.array([True, False])}
    params = [{"name": k, "data": Tensor(v)} for k, v in state.items()]
    params.append({"name": "g.bf16", "data": Tensor(state["a.f32"][:2]).astype(ms.bfloat16)})
    monkeypatch.setattr(serialization, "SLICE_SIZE", 1)  # KB: "a.f32" (4.7 KB) is written in 5 slices
    ms.save_checkpoint(params, str(tmp_path / "w.ckpt"), crc_check=True)
    reader = CkptReader(tmp_path / "w.ckpt")
    assert len(reader.entries["a.f32"][2]) == 5
    expected = ms.load_checkpoint(str(tmp_path / "w.ckpt"), crc_check=True)
    assert reader.shapes() == {k: tuple(v.shape) for k, v in expected.items()}
    for key, value in expected.items():
        ref = value.float().asnumpy() if key == "g.bf16" else value.asnumpy()
        got = reader.get(key)
        assert got.dtype == ref.dtype and np.array_equal(got, ref), key


def test_damaged_ckpt_is_one_line(tmp_path):
    (tmp_path / "bad.ckpt").write_bytes(b"\x0a\x05abc")
    with pytest.raises(CheckpointError, match=r"bad\.ckpt: not a plain MindSpore checkpoint"):
        read_tensors(tmp_path / "bad.ckpt")
