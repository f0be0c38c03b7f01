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
ignored keys are reported, and nothing is written unless every parameter was found. An existing output
is replaced only with --overwrite, and never when it is the input. A training step_*.ckpt (train.py)
converts the weights it holds (EMA weights when the run kept them).
"""
import argparse
import os
from pathlib import Path

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore is imported)
import numpy as np
from omegaconf import OmegaConf

from svd.cli import run_cli
from svd.io.checkpoint import (DIFFUSERS_FILES, CheckpointError, TensorSource, convert_from_ours, convert_to_ours,
                               detect_layout, load_weights, model_shapes, save_diffusers_folder, save_tensors)
from svd.io.config import build_model, load_config
from svd.io.schema import check_output_file, check_writable_folder
from svd.models.lora import attention_projections, check_fits, check_scale, merge_lora, parse_lora_spec, read_lora


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="svd, svd_xt, svd_xt_1_1, svd_image_decoder, svd_xt_image_decoder, "
                   "svd_tiny or a YAML path (the architecture)")
    p.add_argument("--input", required=True, help=".safetensors, .ckpt or a diffusers folder")
    p.add_argument("--output", required=True, help=".ckpt/.safetensors file, or a folder for --to diffusers")
    p.add_argument("--to", choices=["mindspore", "stability", "mindone", "diffusers"], default="mindspore")
    p.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]",
                   help="merge this LoRA at SCALE (default 1) into the weights written; repeatable")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="store floating-point tensors in this precision "
                   "(default: as read); fp16 halves a file, e.g. the shipped toy model")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (never the input itself)")
    return p.parse_args(argv)


DTYPES = {"fp32": np.float32, "fp16": np.float16}


def cast_floats(tensors, dtype):
    """``tensors`` with every floating-point array in ``dtype`` (a key of DTYPES; None keeps them)."""
    if dtype is None:
        return tensors
    return {k: v.astype(DTYPES[dtype]) if v.dtype.kind == "f" else v for k, v in tensors.items()}


def _written_files(output, target):
    if target == "diffusers":
        return {Path(output) / folder / name for folder, name in DIFFUSERS_FILES.items()}
    return {Path(output)}


def _input_files(source):
    source = Path(source)
    if not source.is_dir():
        return {source}
    found = {source}
    for folder in DIFFUSERS_FILES:
        found |= set((source / folder).glob("*.safetensors"))
    return found


def check_output(source, output, target="mindspore", overwrite=False):
    """Before any work: the output's type fits ``target``, it is not the input, and it exists only with
    ``overwrite``."""
    output = Path(output)
    real = lambda paths: {os.path.realpath(p) for p in paths}
    if real(_written_files(output, target)) & real(_input_files(source)) or real([output]) == real([source]):
        raise ValueError(f"--output '{output}' would overwrite the input '{source}': write the conversion "
                         "elsewhere (--overwrite never replaces the input)")
    if target == "diffusers":
        if output.suffix in (".ckpt", ".safetensors"):
            raise ValueError(f"--output '{output}': --to diffusers writes a folder, not a {output.suffix} file")
        if output.exists() and not output.is_dir():
            raise FileExistsError(f"--output '{output}' is an existing file, where the diffusers folder would go")
        if output.exists() and any(output.iterdir()) and not overwrite:
            raise FileExistsError(f"--output '{output}' exists and is not empty; pass --overwrite to write into "
                                  "it")
        check_writable_folder(output, "--output")
        return
    if output.suffix not in (".ckpt", ".safetensors"):
        raise ValueError(f"--output '{output}': expected a .safetensors or .ckpt file for --to {target}")
    if target == "stability" and output.suffix == ".ckpt":
        raise ValueError(f"--output '{output}': PyTorch cannot read a MindSpore .ckpt; for --to stability write "
                         ".safetensors (which sgm and ComfyUI load)")
    check_output_file(output, "--output", overwrite)


def convert(config, source, output, target="mindspore", loras=(), overwrite=False, dtype=None):
    """Returns the conversion report; raises CheckpointError if the weights or a LoRA do not fit the config.

    ``loras``: ``(path, scale)`` pairs merged into the weights before they are written. An existing
    ``output`` is an error unless ``overwrite`` (and always when it is ``source``). ``dtype`` ('fp16',
    'fp32') stores the floating-point tensors in that precision.
    """
    cfg = load_config(config)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model = build_model(cfg, lazy=True)
    if not Path(source).exists():
        raise FileNotFoundError(f"--input '{source}' does not exist")
    check_output(source, output, target, overwrite)
    lora_files = []
    for path, scale in loras:
        check_scale(scale, path)
        lora_files.append((read_lora(path), scale))
        check_fits(lora_files[-1][0], attention_projections(model))
    tensors = TensorSource(source)
    if tensors.training_base is not None:  # a train.py step_*.ckpt: the weights it holds (over its base weights)
        layout, report = "training checkpoint", load_weights(model, source, cfg.model)
        ours = {p.name: p.asnumpy() for p in model.get_parameters()}
    else:
        state = {key: tensors.get(key) for key in tensors.shapes}
        layout = detect_layout(state, source)
        ours, report = convert_to_ours(state, model_shapes(model), model_cfg, layout)
    if not report.ok():
        raise CheckpointError(f"{source} ({layout} layout) does not match config '{config}': {report.summary()}")
    for lora, scale in lora_files:
        merge_lora(ours, lora, scale)
    ours = cast_floats(ours, dtype)
    if target == "mindspore":
        save_tensors(ours, output)
    elif target == "diffusers":
        save_diffusers_folder(convert_from_ours(ours, model_cfg, "diffusers"), output)
    else:
        save_tensors(convert_from_ours(ours, model_cfg, target), output)
    return layout, report


def main(argv=None):
    args = parse_args(argv)
    load_config(args.config)
    if not Path(args.input).exists():
        raise FileNotFoundError(f"--input '{args.input}' does not exist")
    check_output(args.input, args.output, args.to, args.overwrite)
    for path, _ in [parse_lora_spec(spec) for spec in args.lora]:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--lora '{path}' does not exist")
    layout, report = convert(args.config, args.input, args.output, args.to,
                             [parse_lora_spec(spec) for spec in args.lora], args.overwrite, args.dtype)
    print(f"{args.input} ({layout}) -> {args.output} ({args.to}): {report.summary()}; "
          f"{len(report.ignored)} source tensors ignored by design")
    for key in report.ignored[:10]:
        print(f"  ignored: {key}")


if __name__ == "__main__":
    run_cli(main)
