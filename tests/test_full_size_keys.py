"""Every parameter of the full-size SVD maps onto the published layouts, with equal shapes.

Diffusers models are built on torch's meta device from the published SVD hyper-parameters
(not from our configs), ours without initialisation, so nothing large is allocated.
"""
import math

import pytest
from omegaconf import OmegaConf

torch = pytest.importorskip("torch")

from svd.io.checkpoint import match_keys, model_shapes  # noqa: E402
from svd.io.config import build_model, load_config  # noqa: E402
from svd.io.layouts import stability_name  # noqa: E402


@pytest.fixture(scope="module")
def full():
    cfg = load_config("svd")
    model = build_model(cfg, lazy=True)
    return model_shapes(model), OmegaConf.to_container(cfg.model, resolve=True)


def published_diffusers_shapes():
    from tests.reference import published_modules
    shapes = {}
    for folder, module in published_modules(num_frames=14).items():
        shapes.update({f"{folder}/{k}": tuple(v.shape) for k, v in module.state_dict().items()})
    return shapes


def test_every_key_maps_to_diffusers_at_full_size(full):
    shapes, model_cfg = full
    available = published_diffusers_shapes()
    plan, report = match_keys(available, shapes, model_cfg, "diffusers")
    assert report.ok(), report.summary()
    assert len(plan) == len(shapes)
    assert all(k.endswith("position_ids") for k in report.ignored)
    total = sum(math.prod(s) for s in shapes.values())
    assert 2.2e9 < total < 2.3e9, total  # UNet 1.52B + VAE 0.1B + ViT-H/14 0.63B


# Keys and shapes of Stability's single file, as given by its module tree (see shared/reference).
STABILITY_SAMPLES = {
    "model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3),
    "model.diffusion_model.label_emb.0.0.weight": (1280, 768),
    "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight": (320, 320, 3, 1, 1),
    "model.diffusion_model.input_blocks.1.0.time_mixer.mix_factor": (1,),
    "model.diffusion_model.input_blocks.1.1.time_stack.0.ff_in.net.0.proj.weight": (2560, 320),
    "model.diffusion_model.input_blocks.1.1.time_pos_embed.0.weight": (1280, 320),
    "model.diffusion_model.input_blocks.1.1.time_stack.0.attn2.to_k.weight": (320, 1024),
    "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_out.0.bias": (1280,),
    "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
    "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
    "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
    "first_stage_model.decoder.up.3.block.0.mix_factor": (1,),
    "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
    "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
    "first_stage_model.decoder.up.1.block.2.time_stack.out_layers.3.weight": (256, 256, 3, 1, 1),
    "first_stage_model.decoder.conv_out.time_mix_conv.weight": (3, 3, 3, 1, 1),
    "first_stage_model.decoder.up.1.upsample.conv.weight": (256, 256, 3, 3),
    "conditioner.embedders.3.encoder.quant_conv.weight": (8, 8, 1, 1),
    "conditioner.embedders.3.encoder.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
    "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
    "conditioner.embedders.0.open_clip.model.visual.proj": (1280, 1024),
    "conditioner.embedders.0.open_clip.model.visual.positional_embedding": (257, 1280),
}


def test_stability_names_and_shapes_at_full_size(full):
    shapes, _ = full
    stability = {stability_name(k): v for k, v in shapes.items()}
    for key, shape in STABILITY_SAMPLES.items():
        assert stability.get(key) == shape, key


def test_svd_and_svd_xt_share_the_architecture():
    assert load_config("svd").model == load_config("svd_xt").model
    assert load_config("svd_xt").sampling.num_frames == 25
    assert load_config("svd").sampling.num_frames == 14
