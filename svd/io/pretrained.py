"""Loading with one call: a checkpoint path becomes a model, its config read from the checkpoint when not given.

Shapes decide which configs fit; configs with the same architecture (svd, svd_xt and svd_xt_1_1
differ only in their sampling defaults) are told apart by what the checkpoint says about itself:
``num_frames`` in a diffusers folder's ``unet/config.json``, then the longest config name, with or
without its ``svd_`` prefix, found as a word in the file or folder name (``svd_xt-993f895f.ckpt`` ->
svd_xt, ``stable-video-diffusion-img2vid-xt-1-1`` -> svd_xt_1_1).
"""
import json
import re
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from svd.io.checkpoint import CheckpointError, DamagedCheckpointError, load_weights
from svd.io.config import CONFIG_DIR, REQUIRED_SECTIONS, build_model, load_config, resolve_config_path
from svd.models.interpolation import load_model_weights


def load_pretrained(path, config=None):
    """``(config name, config, model)`` with the weights at ``path``; ``config`` (name or YAML) or inferred. A weights
    delta's base is read as an interpolation model reads base weights, so the shipped interpolation delta loads too."""
    if config is not None:
        cfg = load_config(config)
        model = build_model(cfg, lazy=True)
        load_weights(model, path, cfg.model, load_base=load_model_weights)
        return resolve_config_path(config).stem, cfg, model
    return infer_and_load(path)


def model_configs():
    """Configs in configs/ that describe a model (training YAMLs point at one instead)."""
    configs = {}
    for file in sorted(CONFIG_DIR.glob("*.yaml")):
        cfg = OmegaConf.load(file)
        if all(section in cfg for section in REQUIRED_SECTIONS):
            configs[file.stem] = cfg
    return configs


def diffusers_num_frames(path):
    """``num_frames`` of a diffusers folder's ``unet/config.json``, or None."""
    config_file = Path(path) / "unet" / "config.json"
    if not config_file.is_file():
        return None
    return json.loads(config_file.read_text()).get("num_frames")


def name_evidence(name, label):
    """Length of the longest form of config ``name`` (``svd_xt_1_1`` or ``xt_1_1``) that is a word of ``label``."""
    forms = {name, name.removeprefix("svd_")}
    return max((len(form) for form in forms if re.search(rf"(?<![a-z0-9]){re.escape(form)}(?![a-z0-9])", label)),
               default=0)


def evidence(name, cfg, path, num_frames):
    """How strongly the checkpoint points at config ``name``: matching num_frames, then its name in the path."""
    label = Path(path).name.lower().replace("-", "_")
    return num_frames is not None and cfg.sampling.num_frames == num_frames, name_evidence(name, label)


def choose_config(configs, path, fits):
    """The config to load ``path`` with, most evident first among those that ``fits(name)``; warns when
    configs of the same architecture were indistinguishable. Returns the name, or None if none fits."""
    num_frames = diffusers_num_frames(path)
    score = {name: evidence(name, cfg, path, num_frames) for name, cfg in configs.items()}
    architecture = {name: OmegaConf.to_container(cfg.model, resolve=True) for name, cfg in configs.items()}
    tried = []
    for name in sorted(configs, key=lambda n: score[n], reverse=True):
        if architecture[name] in tried:
            continue
        tried.append(architecture[name])
        if fits(name):
            twins = [n for n in configs if n != name and architecture[n] == architecture[name]]
            if twins and score[name] <= max(score[n] for n in twins):
                warnings.warn(f"{path}: its tensors fit {', '.join(sorted([name] + twins))} alike; using {name} "
                              "(pass config= to choose)", stacklevel=3)
            return name
    return None


def infer_and_load(path):
    """Try one lazily built model per architecture until one loads: a misfit fails on the shapes, before
    any weight is copied (a .ckpt, which has no index, is read whole on each try)."""
    configs = model_configs()
    errors, loaded = {}, {}

    def fits(name):
        model = build_model(configs[name], lazy=True)
        try:
            load_weights(model, path, configs[name].model, load_base=load_model_weights)
        except DamagedCheckpointError:
            raise  # the file is bad, not the config
        except CheckpointError as err:
            errors[name] = str(err)
            return False
        loaded[name] = model
        return True

    name = choose_config(configs, path, fits)
    if name is None:
        if len(set(errors.values())) == 1:
            raise CheckpointError(next(iter(errors.values())))
        raise CheckpointError(f"{path}: no config in configs/ fits its tensors (tried {', '.join(errors)}; "
                              "pass config=NAME to see what does not match it)")
    return name, configs[name], loaded[name]
