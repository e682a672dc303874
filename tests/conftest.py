"""Shared fixtures. Tests never touch the network: the Hub is forced offline for the whole session."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models run fastest single-threaded; CI has two cores for two jobs


@pytest.fixture(scope="session")
def tiny_demos(tmp_path_factory):
    """A 4-episode demo dataset of the default task, recorded once per test session."""
    from tmrl_vla.data.demos import DemoConfig, record_demos

    root = tmp_path_factory.mktemp("demos") / "dataset"
    config = DemoConfig(num_episodes=4, seed=0, repo_id="local/test_demos")
    stats = record_demos(config, root, progress=False)
    return config, root, stats
