import copy

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_policy_and_batch():
    """A random tiny SmolVLA, its pre-processor, and one preprocessed training batch (b = 3)."""
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    torch.manual_seed(0)
    policy = make_tiny_smolvla()
    stats = {
        "observation.state": {"mean": torch.zeros(6), "std": torch.ones(6)},
        "action": {"mean": torch.zeros(6), "std": torch.ones(6)},
    }
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=stats)
    g = torch.Generator().manual_seed(1)
    raw = {
        "observation.images.front": torch.rand(3, 3, 64, 64, generator=g),
        "observation.state": torch.randn(3, 6, generator=g),
        "action": torch.randn(3, 10, 6, generator=g),
        "action_is_pad": torch.zeros(3, 10, dtype=torch.bool),
        "task": ["pick up the cube", "pick up the red cube", "lift it"],
    }
    return policy, pre(raw)


@pytest.fixture
def fresh(tiny_policy_and_batch):
    """(a private copy of the policy, the batch, the flow noise used for sampling)."""
    policy, batch = tiny_policy_and_batch
    noise = torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(2))
    return copy.deepcopy(policy), {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}, noise
