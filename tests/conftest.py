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


@pytest.fixture(scope="session")
def tiny_base_policy(tiny_demos, tmp_path_factory):
    """A tiny SmolVLA checkpoint trained for a few BC steps on ``tiny_demos`` (a real LeRobot checkpoint)."""
    from tmrl_vla.bc import BCConfig, train_bc

    config, root, _ = tiny_demos
    out = tmp_path_factory.mktemp("base_policy")
    train_bc(
        BCConfig(steps=3, batch_size=4, warmup_steps=1, num_threads=1),
        dataset_repo_id=config.repo_id,
        dataset_root=root,
        out_dir=out,
        progress=False,
        log=lambda _: None,
    )
    return out
