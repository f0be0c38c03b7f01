"""Package the trained toy model for shipping: the UNet stage's weights (UNet, CLIP-style tower, and the VAE it
was trained on), optionally with the autoencoder of a later decoder-only stage, in fp16, and the latent scale
the UNet stage measured written into the model configs.

The UNet only ever sees the encoder, so a decoder trained afterwards over the same (frozen) encoder can replace
the one the UNet stage started from; a VAE whose encoder differs is refused.

    python -m svd_tools.package_toy_model --weights outputs/toy/unet/final.safetensors \\
        --vae outputs/toy/vae_decoder_full/final.safetensors --output models/svd_toy.safetensors

The keyframe-interpolation model, trained from the packaged base (configs/toy_interp.yaml), ships as a delta:
only the tensors its training changed (temporal layers and input convolution, fp16), with the base's file name
in the metadata, so the two models fit the repository together (svd.io.checkpoint.load_weights reads it).

    python -m svd_tools.package_toy_model --interp outputs/toy/interp/final.safetensors \\
        --base models/svd_toy.safetensors --output models/svd_toy_interp.safetensors
"""
import argparse
import os
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from svd.cli import run_cli
from svd.io.checkpoint import DELTA_BASE, CheckpointError, TensorSource, save_tensors
from svd.io.schema import check_output_file
from svd.training.step import TRAINABLE
from svd_tools.convert import cast_floats

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ("svd_toy.yaml", "svd_toy_interp.yaml")
SCALE_LINE = re.compile(r"^(  scale_factor: )\S+(.*)$", re.MULTILINE)


def tensors_of(path):
    source = TensorSource(path)
    return {key: source.get(key) for key in source.shapes}


def packaged(weights, vae=None):
    """All tensors of ``weights`` in fp16, the ``vae.`` ones taken from ``vae`` when given."""
    state = tensors_of(weights)
    if vae is not None:
        autoencoder = {k: v for k, v in tensors_of(vae).items() if k.startswith("vae.")}
        if set(autoencoder) != {k for k in state if k.startswith("vae.")}:
            raise CheckpointError(f"{vae}: its VAE tensors are not those of {weights}")
        changed = sorted(k for k in autoencoder if not k.startswith("vae.decoder.")
                         and not np.array_equal(autoencoder[k], state[k]))
        if changed:
            raise CheckpointError(f"{vae}: its encoder differs from the one the UNet was trained on ({changed[0]}, "
                                  "...): only a decoder trained over that encoder (train.trainable: vae_decoder) fits")
        state.update(autoencoder)
    return cast_floats(state, "fp16")


def interpolation_delta(interp, base):
    """The fp16 tensors of the interpolation model ``interp`` that differ from the packaged ``base``; refused when
    anything interpolation training leaves alone differs (another base, or another train.trainable)."""
    state = cast_floats(tensors_of(interp), "fp16")
    reference = tensors_of(base)
    missing = sorted(set(reference) - set(state))
    if missing:
        raise CheckpointError(f"{interp}: lacks '{missing[0]}' of the base model '{base}' (not a whole model's weights)")
    delta = {k: v for k, v in state.items()
             if k not in reference or reference[k].shape != v.shape or not np.array_equal(reference[k], v)}
    foreign = sorted(k for k in delta if not TRAINABLE["interpolation"](k))
    if foreign:
        raise CheckpointError(f"{interp}: '{foreign[0]}' (and {len(foreign) - 1} more) differs from '{base}' although "
                              "interpolation training never changes it: it was trained from another base or with "
                              "train.trainable other than interpolation")
    return delta


def package_interpolation(args):
    for flag, path in (("--interp", args.interp), ("--base", args.base)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{flag} '{path}' does not exist (train and package that model first)")
    output = args.output or "models/svd_toy_interp.safetensors"
    check_output_file(output, "--output", args.overwrite)
    delta = interpolation_delta(args.interp, args.base)
    relative = os.path.relpath(Path(args.base).resolve(), Path(output).resolve().parent)
    save_tensors(delta, output, metadata={DELTA_BASE: relative})
    size = Path(output).stat().st_size / 2 ** 20
    print(f"wrote {output} ({size:.1f} MiB, fp16): {len(delta)} tensors over its base '{relative}'")


def write_scale_factor(scale, folder=ROOT / "configs", configs=CONFIGS):
    """Set ``model.scale_factor`` in each of the toy model configs, keeping the rest of the file as it is."""
    for name in configs:
        path = Path(folder) / name
        text, count = SCALE_LINE.subn(lambda m: f"{m.group(1)}{scale:.6f}{m.group(2)}", path.read_text(), count=1)
        if count != 1:
            raise ValueError(f"{path}: no 'scale_factor:' line under model to update")
        path.write_text(text)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="outputs/toy/unet/final.safetensors", help="the UNet stage's final weights")
    p.add_argument("--vae", help="a decoder-only stage's final weights (its autoencoder replaces the one in --weights)")
    p.add_argument("--overrides", help="the UNet stage's model_overrides.yaml (default: beside --weights)")
    p.add_argument("--interp", help="package this interpolation model's final weights as a delta over --base instead")
    p.add_argument("--base", default="models/svd_toy.safetensors", help="--interp: the packaged base it was trained from")
    p.add_argument("--output", help="default: models/svd_toy.safetensors (models/svd_toy_interp.safetensors with --interp)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = p.parse_args(argv)
    if args.interp:
        return package_interpolation(args)
    args.output = args.output or "models/svd_toy.safetensors"
    for flag, path in (("--weights", args.weights), ("--vae", args.vae)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{flag} '{path}' does not exist (train that stage first)")
    overrides = Path(args.overrides or Path(args.weights).parent / "model_overrides.yaml")
    if not overrides.is_file():
        raise FileNotFoundError(f"'{overrides}' does not exist: the UNet stage writes the measured latent scale there")
    scale = OmegaConf.select(OmegaConf.load(overrides), "model.scale_factor")
    if not isinstance(scale, float) or not scale > 0:
        raise ValueError(f"{overrides}: model.scale_factor must be a positive number, got {scale!r}")
    check_output_file(args.output, "--output", args.overwrite)
    save_tensors(packaged(args.weights, args.vae), args.output)
    write_scale_factor(scale)
    size = Path(args.output).stat().st_size / 2 ** 20
    print(f"wrote {args.output} ({size:.1f} MiB, fp16); scale_factor {scale:.6f} written to {', '.join(CONFIGS)}")


if __name__ == "__main__":
    run_cli(main)
