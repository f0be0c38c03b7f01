"""Convert SVD weights between the PyTorch layouts, mindone's and ours.

    # Stability single file, mindone .ckpt or diffusers folder (also fp16 variants, mindone.diffusers)
    # -> MindSpore checkpoint (our names); the input layout is detected
    python -m svd_tools.convert --config svd_xt --input svd_xt.safetensors --output svd_xt.ckpt
    python -m svd_tools.convert --config svd_xt --input svd_xt-993f895f.ckpt --output svd_xt.ckpt
    # -> Stability single file, mindone's examples/svd .ckpt, or a diffusers folder
    python -m svd_tools.convert --config svd_xt --input svd_xt.ckpt --output back.safetensors --to stability
    python -m svd_tools.convert --config svd_xt --input svd_xt.ckpt --output svd_xt-mindone.ckpt --to mindone
    python -m svd_tools.convert --config svd_xt --input svd_xt.ckpt --output svd_xt_diffusers --to diffusers
    # merge LoRAs (train.py with train.trainable=lora) into the weights written, each at a scale
    python -m svd_tools.convert --config svd_xt --input svd_xt.ckpt --output pan.ckpt --lora pan.safetensors:0.8

Every tensor is renamed by an explicit table and shape-checked; missing, unexpected and knowingly
ignored keys are reported, and nothing is written unless every parameter was found.
"""
import argparse

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore is imported)
from omegaconf import OmegaConf

from svd.checkpoint import (CheckpointError, convert_from_ours, convert_to_ours, detect_layout, model_shapes,
                            read_tensors, save_diffusers_folder, save_tensors)
from svd.cli import run_cli
from svd.config import build_model, load_config
from svd.lora import attention_projections, check_fits, check_scale, merge_lora, parse_lora_spec, read_lora


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="svd, svd_xt, svd_xt_1_1, svd_image_decoder, svd_xt_image_decoder, "
                   "svd_tiny or a YAML path (the architecture)")
    p.add_argument("--input", required=True, help=".safetensors, .ckpt or a diffusers folder")
    p.add_argument("--output", required=True, help=".ckpt/.safetensors file, or a folder for --to diffusers")
    p.add_argument("--to", choices=["mindspore", "stability", "mindone", "diffusers"], default="mindspore")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge this LoRA at SCALE (default 1) into the weights written; repeatable")
    return p.parse_args(argv)


def convert(config, source, output, target="mindspore", loras=()):
    """Returns the conversion report; raises CheckpointError if the weights or a LoRA do not fit the config.

    ``loras``: ``(path, scale)`` pairs merged into the weights before they are written.
    """
    cfg = load_config(config)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model(cfg, lazy=True)
    lora_files = []
    for path, scale in loras:
        check_scale(scale, path)
        lora_files.append((read_lora(path), scale))
        check_fits(lora_files[-1][0], attention_projections(model))
    state = read_tensors(source)
    layout = detect_layout(state, source)
    ours, report = convert_to_ours(state, model_shapes(model), model_cfg, layout)
    if not report.ok():
        raise CheckpointError(f"{source} ({layout} layout) does not match config '{config}': {report.summary()}")
    for lora, scale in lora_files:
        merge_lora(ours, lora, scale)
    if target == "mindspore":
        save_tensors(ours, output)
    elif target == "diffusers":
        save_diffusers_folder(convert_from_ours(ours, model_cfg, "diffusers"), output)
    else:
        save_tensors(convert_from_ours(ours, model_cfg, target), output)
    return layout, report


def main(argv=None):
    args = parse_args(argv)
    layout, report = convert(args.config, args.input, args.output, args.to,
                             [parse_lora_spec(spec) for spec in args.lora])
    print(f"{args.input} ({layout}) -> {args.output} ({args.to}): {report.summary()}; "
          f"{len(report.ignored)} source tensors ignored by design")
    for key in report.ignored[:10]:
        print(f"  ignored: {key}")


if __name__ == "__main__":
    run_cli(main)
