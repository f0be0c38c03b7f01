"""One place that checks every config value and command-line number before any model work.

Each check names the file (or the option), the key, the value and what was expected, in one line:

    configs/train_tiny.yaml: train.steps must be an integer >= 1, got 0

``load_yaml`` reads a YAML file with one-line errors for malformed files; ``apply_overrides``
merges ``KEY=VALUE`` arguments; ``check_train_config`` and ``check_model_config`` validate the
training YAML and a model YAML (numbers given as strings, e.g. ``1e-4``, are converted in place);
``check_sampling`` checks sampling values, from a config or the command line.
"""
import math
import numbers
import sys
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

SEED_LIMIT = 2 ** 32  # MindSpore's and numpy's seeds are 32-bit
ABSENT = "__absent__"


class Rule:
    """A value check: ``check(value)`` returns the (possibly converted) value or raises ValueError(expectation)."""

    def __init__(self, expect, check, optional=False, nullable=False):
        self.expect, self._check, self.optional, self.nullable = expect, check, optional, nullable

    def check(self, value):
        if value is None:
            if self.nullable:
                return None
            raise ValueError(self.expect)
        return self._check(value)


def _number(value, expect):
    if isinstance(value, bool):
        raise ValueError(expect)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(expect) from None
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(expect)
    return value


def integer(low=None, high=None, **flags):
    """An int (not a bool, not 2.0) with ``low <= value < high``."""
    bounds = ([f">= {low}"] if low is not None else []) + ([f"< {high}"] if high is not None else [])
    expect = "an integer" + (" " + " and ".join(bounds) if bounds else "")

    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(expect)
        if (low is not None and value < low) or (high is not None and value >= high):
            raise ValueError(expect)
        return int(value)
    return Rule(expect, check, **flags)


def number(low=None, high=None, low_open=False, high_open=False, **flags):
    """A finite real (ints accepted; numeric strings such as '1e-4' converted) within the bounds."""
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    expect = "a number" + (" " + " and ".join(bounds) if bounds else "")

    def check(value):
        value = float(_number(value, expect))
        if low is not None and (value < low or (low_open and value == low)):
            raise ValueError(expect)
        if high is not None and (value > high or (high_open and value == high)):
            raise ValueError(expect)
        return value
    return Rule(expect, check, **flags)


def boolean(**flags):
    def check(value):
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value
    return Rule("true or false", check, **flags)


def text(**flags):
    def check(value):
        if not isinstance(value, str) or not value.strip():
            raise ValueError("a non-empty string")
        return value
    return Rule("a non-empty string", check, **flags)


def choice(options, **flags):
    options = tuple(options)
    expect = "one of " + ", ".join(repr(o) for o in options)

    def check(value):
        if isinstance(value, bool) or value not in options:
            raise ValueError(expect)
        return value
    return Rule(expect, check, **flags)


def listing(item, length=None, min_length=1, **flags):
    """A list of values that each pass ``item``; exactly ``length`` of them, or at least ``min_length``."""
    count = f"{length}" if length is not None else f"at least {min_length}"
    expect = f"a list of {count} values, each {item.expect}"

    def check(value):
        if not isinstance(value, (list, tuple, ListConfig)):
            raise ValueError(expect)
        if (length is not None and len(value) != length) or len(value) < min_length:
            raise ValueError(expect)
        try:
            return [item.check(v) for v in value]
        except ValueError:
            raise ValueError(expect) from None
    return Rule(expect, check, **flags)


def either(*rules, **flags):
    expect = " or ".join(r.expect for r in rules)

    def check(value):
        for rule in rules:
            try:
                return rule.check(value)
            except ValueError:
                pass
        raise ValueError(expect)
    return Rule(expect, check, **flags)


TRAINABLE_CHOICES = ("temporal", "unet", "unet+image_encoder", "vae", "vae_decoder", "lora",  # svd.training.step
                     "interpolation")
PARTS = ("unet", "vae", "image_encoder")

TRAIN_SCHEMA = {
    "model_config": text(),
    "data.csv": text(),
    "data.root": text(nullable=True),
    "data.num_frames": integer(1),
    "data.frame_stride": integer(1),
    "data.height": integer(1),
    "data.width": integer(1),
    "data.batch_size": integer(1),
    "data.crop": listing(integer(1), length=2, optional=True, nullable=True),
    "train.steps": integer(1),
    "train.trainable": choice(TRAINABLE_CHOICES),
    "train.seed": integer(0, SEED_LIMIT),
    "train.precision": choice(("fp32", "fp16", "bf16")),
    "train.accumulation_steps": integer(1),
    "train.clip_norm": number(0),
    "train.loss_scale": number(0, low_open=True),
    "train.dynamic_loss_scale": boolean(),
    "train.scale_factor": number(1, low_open=True),
    "train.scale_window": integer(1),
    "train.ema_decay": number(0, 1, high_open=True),
    "train.recompute": boolean(),
    "train.cond_dropout": number(0, 1, optional=True),
    "train.first_frame_weight": number(0, low_open=True, optional=True),
    "train.kl_weight": number(0, optional=True),
    "train.latent_scale": choice(("auto", "config"), optional=True, nullable=True),
    "optimizer.lr": number(0),
    "optimizer.end_lr": number(0),
    "optimizer.warmup_steps": integer(0),
    "optimizer.betas": listing(number(0, 1, high_open=True), length=2),
    "optimizer.eps": number(0, low_open=True),
    "optimizer.weight_decay": number(0),
    "noise.p_mean": number(),
    "noise.p_std": number(0),
    "noise.cond_aug_mean": number(),
    "noise.cond_aug_std": number(0),
    "checkpoint.dir": text(),
    "checkpoint.every": integer(1),
    "checkpoint.keep": integer(1),
    "runtime.mode": choice(("graph", "pynative")),
    "runtime.jit_level": choice(("O0", "O1", "O2"), optional=True),
    "runtime.compile_loss": boolean(optional=True),
    "runtime.memory_budget_mb": number(0, low_open=True, optional=True, nullable=True),
    "runtime.sink": boolean(optional=True),
    "runtime.sink_size": integer(1, optional=True),
    "lora.rank": integer(1, optional=True),
    "lora.alpha": number(0, low_open=True, optional=True),
    "lora.targets": listing(text(), optional=True),
    "init.random_seed": integer(0, SEED_LIMIT, optional=True),
    "init.load.path": text(optional=True),
    "init.load.parts": listing(choice(PARTS), optional=True),
}

SAMPLING_SCHEMA = {
    "num_frames": integer(1),
    "num_steps": integer(1),
    "height": integer(1),
    "width": integer(1),
    "fps": integer(1),
    "motion_bucket_id": integer(0),
    "noise_aug_strength": number(0),
    "decode_chunk_size": integer(1),
    "guider": choice(("linear", "triangle")),
    "min_guidance_scale": number(0),
    "max_guidance_scale": number(0),
    "sigma_min": number(0, low_open=True),
    "sigma_max": number(0, low_open=True),
    "rho": number(0, low_open=True),
    "seed": integer(0, SEED_LIMIT),
}


def load_yaml(path, what="config"):
    """A YAML mapping as a DictConfig; one-line errors for a missing, malformed or non-mapping file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} '{path}' does not exist")
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (YAML) file") from None
    except Exception as err:  # OmegaConf's own errors (e.g. unsupported value types)
        raise ValueError(f"{path}: cannot be read as a config: {str(err).splitlines()[0]}") from None
    if cfg is None or (not cfg and not path.read_text(errors="replace").strip()):
        raise ValueError(f"{path}: an empty file; expected a YAML mapping of sections (key: value)")
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"{path}: expected a YAML mapping of sections (key: value), got a "
                         f"{'list' if isinstance(cfg, ListConfig) else type(cfg).__name__}")
    return cfg


def apply_overrides(cfg, overrides, path):
    """``KEY=VALUE`` arguments merged into ``cfg``; the key must exist in the YAML at ``path``."""
    import yaml

    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override '{item}' must be KEY=VALUE")
        if not key.strip():
            raise ValueError(f"override '{item}' has an empty key: expected KEY=VALUE, e.g. train.steps=5")
        if OmegaConf.select(cfg, key, default=ABSENT) == ABSENT:
            raise KeyError(f"override '{key}' is not a key of {path}")
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except yaml.YAMLError as err:
        raise ValueError(f"overrides {list(overrides)}: a value is not valid YAML: {getattr(err, 'problem', err)}") \
            from None
    except Exception as err:  # OmegaConf type errors (e.g. a list where a section is)
        raise ValueError(f"overrides {list(overrides)}: {str(err).splitlines()[0]}") from None


def describe(value):
    return repr(value) if isinstance(value, str) else str(OmegaConf.to_container(value) if isinstance(
        value, (DictConfig, ListConfig)) else value)


def _check_rules(cfg, schema, source, prefix=""):
    for key, rule in schema.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value == ABSENT:
            if rule.optional:
                continue
            raise KeyError(f"{source}: missing key '{prefix}{key}' ({rule.expect})")
        try:
            checked = rule.check(value)
        except ValueError as err:
            raise ValueError(f"{source}: {prefix}{key} must be {err}, got {describe(value)}") from None
        plain = OmegaConf.to_container(value) if isinstance(value, ListConfig) else value
        if type(checked) is not type(plain) or checked != plain:  # e.g. '1e-4' -> 0.0001
            OmegaConf.update(cfg, key, checked, merge=False)


def _leaf_keys(node, prefix=""):
    if isinstance(node, DictConfig):
        for key in node.keys():
            yield from _leaf_keys(node.get(key), f"{prefix}{key}.")
    else:
        yield prefix[:-1]


def check_train_config(cfg, source):
    """Validate a training config in place (numeric strings converted); ``source`` names it in errors.

    Unknown keys are reported as warnings (they would be ignored silently otherwise).
    """
    _check_rules(cfg, TRAIN_SCHEMA, source)
    known_sections = {key.split(".")[0] for key in TRAIN_SCHEMA}
    for key in _leaf_keys(cfg):
        if key not in TRAIN_SCHEMA and key.split(".")[0] in known_sections:
            print(f"warning: {source}: unknown key '{key}' is ignored", file=sys.stderr)
    t = cfg.train
    if t.trainable == "lora":
        if cfg.get("lora") is None:
            raise ValueError(f"train.trainable: lora needs a 'lora' section (rank, alpha, targets) in {source}")
        for key in ("lora.rank", "lora.alpha", "lora.targets"):
            if OmegaConf.select(cfg, key, default=ABSENT) == ABSENT:
                raise KeyError(f"{source}: train.trainable: lora needs '{key}' (a 'lora' section with rank, alpha, "
                               "targets)")
    if "init" in cfg and OmegaConf.select(cfg, "init.random_seed", default=ABSENT) == ABSENT:
        raise KeyError(f"{source}: missing key 'init.random_seed' ({TRAIN_SCHEMA['init.random_seed'].expect})")
    if OmegaConf.select(cfg, "init.load", default=None) is not None:
        for key in ("init.load.path", "init.load.parts"):
            if OmegaConf.select(cfg, key, default=ABSENT) == ABSENT:
                raise KeyError(f"{source}: init.load needs '{key}'")
    if cfg.optimizer.end_lr > cfg.optimizer.lr:
        print(f"warning: {source}: optimizer.end_lr {cfg.optimizer.end_lr:g} > optimizer.lr {cfg.optimizer.lr:g}: "
              "the learning rate rises after warmup", file=sys.stderr)
    if t.steps < t.accumulation_steps:
        raise ValueError(f"{source}: train.steps ({t.steps}) must be >= train.accumulation_steps "
                         f"({t.accumulation_steps}), or the optimizer never runs")
    crop = cfg.data.get("crop")
    if crop and not (crop[0] <= cfg.data.height and crop[1] <= cfg.data.width):
        raise ValueError(f"{source}: data.crop {list(crop)} must fit inside data.height x data.width "
                         f"{cfg.data.height}x{cfg.data.width}")
    runtime = cfg.runtime
    if runtime.get("sink"):
        size = runtime.get("sink_size", 1)
        for key, value in (("train.steps", t.steps), ("checkpoint.every", cfg.checkpoint.every)):
            if value % size:
                raise ValueError(f"{source}: with runtime.sink, {key} ({value}) must be a multiple of "
                                 f"runtime.sink_size ({size}): a sink runs sink_size steps at a time")
    return cfg


def check_size_multiple(cfg, multiple, source):
    """``data.height``/``data.width`` (or ``data.crop``) fit the model's size multiple."""
    d = cfg.data
    sizes = [("data.height", d.height), ("data.width", d.width)]
    if d.get("crop"):
        sizes += [("data.crop", d.crop[0]), ("data.crop", d.crop[1])]
    for key, value in sizes:
        if value % multiple:
            raise ValueError(f"{source}: {key} must be a multiple of {multiple} for model config "
                             f"'{cfg.model_config}', got {value}")


def _positive_numbers(node, key, source):
    if isinstance(node, DictConfig):
        for name in node.keys():
            _positive_numbers(node.get(name), f"{key}.{name}", source)
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            _positive_numbers(item, f"{key}[{i}]", source)
    elif isinstance(node, bool) or node is None:
        return
    elif isinstance(node, numbers.Real):
        if not math.isfinite(node) or node <= 0:
            raise ValueError(f"{source}: {key} must be a positive number, got {node}")
    elif isinstance(node, str):
        try:
            float(node)
        except ValueError:
            return
        raise ValueError(f"{source}: {key} must be a number, got the string {node!r}")


def check_model_config(cfg, source):
    """A model YAML: every number of the ``model`` section positive, the ``sampling`` values valid."""
    _positive_numbers(cfg.model, "model", source)
    sampling = {k: v for k, v in SAMPLING_SCHEMA.items() if k in cfg.sampling}
    _check_rules(cfg.sampling, sampling, source, prefix="sampling.")
    return cfg


def check_sampling(values, label=lambda key: f"--{key.replace('_', '-')}"):
    """Sampling numbers given on the command line (None: not given); errors name the option by ``label``."""
    for key, value in values.items():
        if value is None or key not in SAMPLING_SCHEMA:
            continue
        try:
            SAMPLING_SCHEMA[key].check(value)
        except ValueError as err:
            raise ValueError(f"{label(key)} must be {err}, got {value}") from None


def check_positive(name, value, allow_none=True):
    """A positive finite number option (e.g. --memory-budget-mb)."""
    if value is None and allow_none:
        return
    try:
        number(0, low_open=True).check(value)
    except ValueError as err:
        raise ValueError(f"{name} must be {err}, got {value}") from None


def _nearest_existing(path):
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable_folder(path, label):
    """``path`` is (or can be created as) a folder we can write into; checked by creating nothing there.

    The nearest existing folder above it is probed with a temporary file (permissions alone say
    nothing for root or read-only mounts).
    """
    import tempfile

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{label} '{path}' is an existing file, not a folder")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise NotADirectoryError(f"{label} '{path}': '{existing}' is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise PermissionError(f"{label} '{path}': cannot write in '{existing}' ({err.strerror})") from None


def check_output_file(path, label, overwrite=True):
    """A file about to be written: not a folder, its folder writable, and (``overwrite`` False) not there yet."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{label} '{path}' is an existing folder, expected a file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{label} '{path}' exists; pass --overwrite to replace it")
    check_writable_folder(path.parent, f"{label} '{path}': folder")
