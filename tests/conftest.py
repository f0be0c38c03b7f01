import mindspore as ms
import numpy as np
import pytest
from omegaconf import OmegaConf

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore runs)
from svd.config import build_model, load_config

ms.set_context(mode=ms.PYNATIVE_MODE)


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
