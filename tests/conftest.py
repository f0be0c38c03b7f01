import numpy as np
import pytest
from omegaconf import OmegaConf

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore runs)
from svd.config import build_model, load_config
from svd.runtime import set_mode

set_mode("pynative")


@pytest.fixture(scope="session")
def tiny_cfg():
    return load_config("svd_tiny")


@pytest.fixture(scope="session")
def tiny_model_cfg(tiny_cfg):
    return OmegaConf.to_container(tiny_cfg.model, resolve=True)


@pytest.fixture(scope="session")
def tiny_model(tiny_cfg):
    np.random.seed(0)
    return build_model(tiny_cfg)
