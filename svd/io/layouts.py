"""Explicit name tables between our parameters and the layouts SVD weights circulate in.

* ``stability``: the single-file ``svd.safetensors`` / ``svd_xt.safetensors`` (and the other releases).
* ``mindone``: mindone's ``examples/svd`` MindSpore files (``svd-d19a808f.ckpt``, ``svd_xt-993f895f.ckpt``):
  Stability's names with MindSpore's cell parameter names.
* ``diffusers``: the ``unet/``, ``vae/`` and ``image_encoder/`` folders.
* ``mindone.diffusers``: the same folders saved by mindone.diffusers, whose CLIP tower (mindone.transformers)
  names its LayerNorms ``gamma``/``beta`` and its position embedding ``embedding_table``.

Every entry says which external tensors make one of our parameters and how
(``same``, ``split_qkv`` for fused attention projections, ``conv1x1`` for VAE
attention stored as Linear, ``transpose`` for the CLIP projection).
"""
import re

STABILITY_PREFIXES = (
    ("unet.", "model.diffusion_model."),
    ("vae.encoder.", "conditioner.embedders.3.encoder.encoder."),
    ("vae.quant_conv.", "conditioner.embedders.3.encoder.quant_conv."),
    ("vae.decoder.", "first_stage_model.decoder."),
    ("vae.post_quant_conv.", "first_stage_model.post_quant_conv."),
    ("image_encoder.", "conditioner.embedders.0.open_clip.model.visual."),
)

# Stability tensors we knowingly do not use: the first stage's own encoder and quant_conv (diffusers keeps a
# single encoder with quant_conv, which is the one SVD conditions on) and open_clip's text-side leftovers.
# Prefixes only, so the same pattern serves mindone's names.
STABILITY_IGNORED = re.compile(r"^(first_stage_model\.(encoder|quant_conv)\.|conditioner\.embedders\.0\.open_clip\."
                               r"model\.(?!visual\.)|conditioner\.embedders\.3\.encoder\.(decoder|post_quant_conv)\.)")

# mindone's rules on Stability names (reference: mindone_svd_keys.md): R1 every GroupNorm/LayerNorm's
# weight/bias -> gamma/beta; R3 AE3DConv's time_mix_conv -> conv3d. (R2, token_embedding -> embedding_table,
# touches only a text-side tensor we ignore.)
_MINDONE_NORM = re.compile(r"(^|\.)(norm\w*|ln_\w+|in_layers\.0|out_layers\.0|diffusion_model\.out\.0)\.(weight|bias)$")
# mindone.transformers' CLIP: nn.LayerNorm and nn.Embedding parameters.
_MINDSPORE_CLIP_NORM = re.compile(r"\.(layer_norm[12]|pre_layrnorm|post_layernorm)\.(weight|bias)$")
_MINDSPORE_LEAF = {"weight": "gamma", "bias": "beta"}

_RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
           "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "nin_shortcut": "conv_shortcut"}
_VAE_ATTN = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_CLIP_LAYER = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
               "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}


class LayoutError(ValueError):
    """A name that has no counterpart in the requested layout."""


def _rename_prefix(name, table):
    """Rename the longest table entry that prefixes ``name`` (up to a dot)."""
    for src in sorted(table, key=len, reverse=True):
        if name.startswith(src + "."):
            return table[src] + name[len(src):]
    raise LayoutError(name)


def _unet_resnet(rest):
    if rest.startswith("time_mixer."):
        return rest
    if rest.startswith("time_stack."):
        return "temporal_res_block." + _rename_prefix(rest[len("time_stack."):], _RESNET)
    return "spatial_res_block." + _rename_prefix(rest, _RESNET)


def _unet_attention(rest):
    rest = re.sub(r"^time_stack\.", "temporal_transformer_blocks.", rest)
    return re.sub(r"^time_pos_embed\.(\d)\.", lambda m: f"time_pos_embed.linear_{int(m.group(1)) // 2 + 1}.", rest)


def _unet_sublayer(block, layer, rest, layers_per_level):
    """Map ``<layer>.<rest>`` of an input/output block to a diffusers sub-module name."""
    if layer == 0:
        return f"{block}.resnets.{layers_per_level}.{_unet_resnet(rest)}"
    if rest.startswith("conv."):
        return f"{block}.upsamplers.0.{rest}"
    return f"{block}.attentions.{layers_per_level}.{_unet_attention(rest)}"


def unet_to_diffusers(name, num_res_blocks):
    """Name inside ``unet.`` -> name inside diffusers' ``unet/``."""
    fixed = {"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
             "label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2",
             "input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out"}
    for src, dst in fixed.items():
        if name.startswith(src + "."):
            return dst + name[len(src):]
    m = re.match(r"input_blocks\.(\d+)\.(\d+)\.(.*)", name)
    if m:
        index, layer, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, slot = divmod(index - 1, num_res_blocks + 1)
        if slot == num_res_blocks:
            return f"down_blocks.{level}.downsamplers.0.conv.{rest[len('op.'):]}"
        return _unet_sublayer(f"down_blocks.{level}", layer, rest, slot)
    m = re.match(r"middle_block\.(\d)\.(.*)", name)
    if m:
        layer, rest = int(m.group(1)), m.group(2)
        if layer == 1:
            return f"mid_block.attentions.0.{_unet_attention(rest)}"
        return f"mid_block.resnets.{layer // 2}.{_unet_resnet(rest)}"
    m = re.match(r"output_blocks\.(\d+)\.(\d+)\.(.*)", name)
    if m:
        index, layer, rest = int(m.group(1)), int(m.group(2)), m.group(3)
        level, slot = divmod(index, num_res_blocks + 1)
        return _unet_sublayer(f"up_blocks.{level}", layer, rest, slot)
    raise LayoutError(name)


def _vae_block(rest, video):
    if video and rest == "mix_factor":
        return "time_mixer.mix_factor"
    if video and rest.startswith("time_stack."):
        return "temporal_res_block." + _rename_prefix(rest[len("time_stack."):], _RESNET)
    renamed = _rename_prefix(rest, _VAE_RESNET)
    return ("spatial_res_block." + renamed) if video else renamed


def _vae_mid(rest, video):
    if rest.startswith("attn_1."):
        return "mid_block.attentions.0." + _rename_prefix(rest[len("attn_1."):], _VAE_ATTN)
    m = re.match(r"block_(\d)\.(.*)", rest)
    return f"mid_block.resnets.{int(m.group(1)) - 1}.{_vae_block(m.group(2), video)}"


def vae_to_diffusers(name, num_levels, temporal_decoder=True):
    """Name inside ``vae.`` -> name inside diffusers' ``vae/`` (AutoencoderKLTemporalDecoder, or AutoencoderKL's
    plain decoder names when ``temporal_decoder`` is false)."""
    if name.startswith(("quant_conv.", "post_quant_conv.")):
        return name
    part, rest = name.split(".", 1)
    video = part == "decoder" and temporal_decoder
    fixed = {"conv_in": "conv_in", "norm_out": "conv_norm_out", "conv_out.time_mix_conv": "time_conv_out",
             "conv_out": "conv_out"}
    for src in ("conv_out.time_mix_conv", "conv_in", "norm_out", "conv_out"):
        if rest.startswith(src + "."):
            return f"{part}.{fixed[src]}{rest[len(src):]}"
    if rest.startswith("mid."):
        return f"{part}.{_vae_mid(rest[len('mid.'):], video)}"
    m = re.match(r"(down|up)\.(\d+)\.(.*)", rest)
    if not m:
        raise LayoutError(name)
    level = int(m.group(2)) if m.group(1) == "down" else num_levels - 1 - int(m.group(2))
    inner = m.group(3)
    prefix = f"{part}.{m.group(1)}_blocks.{level}"
    sm = re.match(r"(downsample|upsample)\.(.*)", inner)
    if sm:
        return f"{prefix}.{sm.group(1)}rs.0.{sm.group(2)}"
    bm = re.match(r"block\.(\d+)\.(.*)", inner)
    if not bm:
        raise LayoutError(name)
    return f"{prefix}.resnets.{bm.group(1)}.{_vae_block(bm.group(2), video)}"


def image_encoder_to_diffusers(name):
    """Name inside ``image_encoder.`` -> (diffusers names, transform)."""
    fixed = {"class_embedding": ("vision_model.embeddings.class_embedding", "same"),
             "positional_embedding": ("vision_model.embeddings.position_embedding.weight", "same"),
             "conv1.weight": ("vision_model.embeddings.patch_embedding.weight", "same"),
             "proj": ("visual_projection.weight", "transpose")}
    if name in fixed:
        dst, kind = fixed[name]
        return [dst], kind
    for src, dst in (("ln_pre.", "vision_model.pre_layrnorm."), ("ln_post.", "vision_model.post_layernorm.")):
        if name.startswith(src):
            return [dst + name[len(src):]], "same"
    m = re.match(r"transformer\.resblocks\.(\d+)\.(.*)", name)
    if not m:
        raise LayoutError(name)
    prefix, rest = f"vision_model.encoder.layers.{m.group(1)}.", m.group(2)
    if rest.startswith("attn.in_proj_"):
        leaf = "weight" if rest.endswith("weight") else "bias"
        return [f"{prefix}self_attn.{p}_proj.{leaf}" for p in "qkv"], "split_qkv"
    return [prefix + _rename_prefix(rest, _CLIP_LAYER)], "same"


def diffusers_entry(name, unet_cfg, vae_cfg):
    """Our parameter name -> (folder, [diffusers names], transform)."""
    if name.startswith("unet."):
        return "unet", [unet_to_diffusers(name[5:], unet_cfg["num_res_blocks"])], "same"
    if name.startswith("vae."):
        renamed = vae_to_diffusers(name[4:], len(vae_cfg["ch_mult"]), vae_cfg.get("temporal_decoder", True))
        kind = "conv1x1" if ".attentions.0.to_" in renamed and renamed.endswith(".weight") else "same"
        return "vae", [renamed], kind
    if name.startswith("image_encoder."):
        keys, kind = image_encoder_to_diffusers(name[len("image_encoder."):])
        return "image_encoder", keys, kind
    raise LayoutError(name)


def stability_name(name):
    """Our parameter name -> Stability single-file name."""
    for ours, theirs in STABILITY_PREFIXES:
        if name.startswith(ours):
            return theirs + name[len(ours):]
    raise LayoutError(name)


def mindone_name(stability):
    """Stability name -> the name in mindone's examples/svd checkpoints."""
    name = _MINDONE_NORM.sub(lambda m: f"{m.group(1)}{m.group(2)}.{_MINDSPORE_LEAF[m.group(3)]}", stability)
    return name.replace(".conv_out.time_mix_conv.", ".conv_out.conv3d.")


def mindone_diffusers_name(key):
    """diffusers ``folder/name`` -> the name mindone.diffusers saves (only its CLIP tower differs)."""
    if not key.startswith("image_encoder/"):
        return key
    if key.endswith(".position_embedding.weight"):
        return key[:-len("weight")] + "embedding_table"
    return _MINDSPORE_CLIP_NORM.sub(lambda m: f".{m.group(1)}.{_MINDSPORE_LEAF[m.group(2)]}", key)


LAYOUTS = ("mindspore", "stability", "mindone", "diffusers", "mindone.diffusers")


def layout_entry(name, layout, model_cfg):
    """Our parameter name -> ([names in ``layout``], transform); diffusers names are ``folder/name``."""
    if layout == "mindspore":
        return [name], "same"
    if layout == "stability":
        return [stability_name(name)], "same"
    if layout == "mindone":
        return [mindone_name(stability_name(name))], "same"
    if layout in ("diffusers", "mindone.diffusers"):
        folder, keys, kind = diffusers_entry(name, model_cfg["unet"], model_cfg["vae"])
        keys = [f"{folder}/{k}" for k in keys]
        return ([mindone_diffusers_name(k) for k in keys] if layout == "mindone.diffusers" else keys), kind
    raise ValueError(f"unknown layout '{layout}', expected one of {', '.join(LAYOUTS)}")
