"""Builds the diffusers reference models that mirror one of our configs, with fully random weights."""
import torch
from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


def unet_kwargs(unet):
    levels = len(unet["channel_mult"])
    channels = tuple(unet["model_channels"] * m for m in unet["channel_mult"])
    with_attention = [2 ** i in unet["attention_resolutions"] for i in range(levels)]
    return dict(
        in_channels=unet["in_channels"], out_channels=unet["out_channels"], block_out_channels=channels,
        down_block_types=tuple("CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
                               for a in with_attention),
        up_block_types=tuple("CrossAttnUpBlockSpatioTemporal" if a else "UpBlockSpatioTemporal"
                             for a in reversed(with_attention)),
        layers_per_block=unet["num_res_blocks"], cross_attention_dim=unet["context_dim"],
        transformer_layers_per_block=unet["transformer_depth"],
        num_attention_heads=tuple(c // unet["num_head_channels"] for c in channels),
        addition_time_embed_dim=unet["adm_in_channels"] // 3,
        projection_class_embeddings_input_dim=unet["adm_in_channels"])


def vae_kwargs(vae):
    channels = tuple(vae["ch"] * m for m in vae["ch_mult"])
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(channels),
                block_out_channels=channels, layers_per_block=vae["num_res_blocks"], latent_channels=vae["embed_dim"])


def clip_config(enc):
    return CLIPVisionConfig(hidden_size=enc["width"], intermediate_size=int(enc["width"] * enc["mlp_ratio"]),
                            num_hidden_layers=enc["layers"], num_attention_heads=enc["heads"],
                            image_size=enc["image_size"], patch_size=enc["patch_size"],
                            projection_dim=enc["output_dim"], hidden_act="gelu", layer_norm_eps=1e-5)


def published_modules(num_frames=25):
    """SVD's three networks at their published size on torch's meta device (shapes only, no memory)."""
    with torch.device("meta"):
        unet = UNetSpatioTemporalConditionModel(num_frames=num_frames)
        vae = AutoencoderKLTemporalDecoder(block_out_channels=(128, 256, 512, 512),
                                           down_block_types=("DownEncoderBlock2D",) * 4, layers_per_block=2)
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
            image_size=224, patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5))
    return {"unet": unet, "vae": vae, "image_encoder": clip}


def build_reference(model_cfg):
    unet = UNetSpatioTemporalConditionModel(**unet_kwargs(model_cfg["unet"]))
    vae = AutoencoderKLTemporalDecoder(**vae_kwargs(model_cfg["vae"]))
    image_encoder = CLIPVisionModelWithProjection(clip_config(model_cfg["image_encoder"]))
    return unet, vae, image_encoder


@torch.no_grad()
def randomize(module, seed):
    """Perturb every tensor (norm scales, biases, blend factors, zero-initialised layers) so no mapping hides."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=gen)
        if p.ndim >= 2:
            fan_in = p[0].numel()
            p.copy_(noise * (1.0 / fan_in) ** 0.5)
        elif name.endswith("mix_factor"):
            p.copy_(noise)
        else:
            p.add_(0.1 * noise)
    module.eval()
    return module


def diffusers_state(unet, vae, image_encoder):
    """The three state dicts as one ``folder/name`` -> ndarray dict (the on-disk diffusers layout)."""
    state = {}
    for folder, module in (("unet", unet), ("vae", vae), ("image_encoder", image_encoder)):
        state.update({f"{folder}/{k}": v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()})
    return state
