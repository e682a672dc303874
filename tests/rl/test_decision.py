import copy

import torch

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
from tmrl_vla.rl.decision import decide, latent_to_noise


def test_latent_to_noise_repeats_z_over_the_chunk():
    z = torch.tensor([[0.5, -1.0]])
    noise = latent_to_noise(z, chunk_size=3, max_action_dim=4, scale=2.0)
    assert noise.shape == (1, 3, 4)
    assert torch.equal(noise[0, :, :2], torch.tensor([[1.0, -2.0]] * 3)) and not noise[..., 2:].any()


def make(policy, batch, heads):
    csp = CSPPolicy.from_base(copy.deepcopy(policy), CSPConfig())
    csp.calibrate_segment_scales([dict(batch)])
    obs_dim = 2 * csp.embed_width + batch["observation.state"].shape[1]
    actor = HighLevelPolicy(
        HighLevelConfig(obs_dim=obs_dim, action_dim=6, embed_dim=csp.embed_width, heads=heads, hidden=32)
    )
    return csp, actor


def test_tmrl_decision_shapes(tiny_policy_and_batch):
    policy, batch = tiny_policy_and_batch
    csp, actor = make(policy, batch, ("z", "y", "eps_c"))
    d = decide(csp, actor, dict(batch), generator=torch.Generator().manual_seed(0))
    assert d.chunk.shape == (3, 10, 6) and torch.isfinite(d.chunk).all()
    assert set(d.actions) == {"z", "y", "eps_c"} and d.sigma.shape == (3,)
    assert d.features.shape == (3, 2 * csp.embed_width + 6)


def test_dsrl_decision_uses_no_sigma_or_context_noise(tiny_policy_and_batch):
    policy, batch = tiny_policy_and_batch
    csp, actor = make(policy, batch, ("z",))
    seen = []
    original = csp.conditioned

    def spy(sigma, batch_size, context_noise=None, generator=None):
        seen.append((sigma, context_noise))
        return original(sigma, batch_size, context_noise, generator)

    csp.conditioned = spy
    d = decide(csp, actor, dict(batch), generator=torch.Generator().manual_seed(0))
    ((sigma, context_noise),) = seen
    assert torch.equal(sigma, torch.zeros(3)) and context_noise is None
    assert set(d.actions) == {"z"}
    # With sigma = 0 the wrapper is the wrapped policy: same chunk as the bare policy from the same noise.
    noise = latent_to_noise(d.actions["z"], 10, 32, 1.0)
    bare = copy.deepcopy(policy).predict_action_chunk(dict(batch), noise=noise)
    assert torch.equal(d.chunk, bare)
