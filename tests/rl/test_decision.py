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


def make(policy, batch, heads, **actor_options):
    csp = CSPPolicy.from_base(copy.deepcopy(policy), CSPConfig())
    csp.calibrate_segment_scales([dict(batch)])
    obs_dim = 2 * csp.embed_width + batch["observation.state"].shape[1]
    actor = HighLevelPolicy(
        HighLevelConfig(
            obs_dim=obs_dim, action_dim=6, embed_dim=csp.embed_width, heads=heads, hidden=32, **actor_options
        )
    )
    return csp, actor


def test_tmrl_decision_shapes(tiny_policy_and_batch):
    policy, batch = tiny_policy_and_batch
    csp, actor = make(policy, batch, ("z", "y", "eps_c"))
    d = decide(csp, actor, dict(batch), generator=torch.Generator().manual_seed(0))
    assert d.chunk.shape == (3, 10, 6) and torch.isfinite(d.chunk).all()
    assert set(d.actions) == {"z", "y", "eps_c"} and d.sigma.shape == (3,)
    assert d.features.shape == (3, 2 * csp.embed_width + 6)


def test_the_policy_gets_sigma_by_the_actors_map(tiny_policy_and_batch):
    from tmrl_vla.rl.actor import sigma_from_y

    policy, batch = tiny_policy_and_batch
    csp, actor = make(policy, batch, ("z", "y"), sigma_centre=0.1)
    seen = []
    original = csp.conditioned

    def spy(sigma, batch_size, context_noise=None, generator=None):
        seen.append(sigma)
        return original(sigma, batch_size, context_noise, generator)

    csp.conditioned = spy
    d = decide(csp, actor, dict(batch), warmup="uniform", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(d.sigma, sigma_from_y(d.actions["y"], 0.1))
    torch.testing.assert_close(seen[0], d.sigma)
    assert not torch.allclose(d.sigma, sigma_from_y(d.actions["y"]))


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


def test_prior_warmup_draws_come_from_the_actors_start_not_from_the_state():
    from tmrl_vla.rl.actor import sigma_from_y
    from tmrl_vla.rl.decision import WARMUP_HEADS

    actor = HighLevelPolicy(
        HighLevelConfig(obs_dim=4, action_dim=3, embed_dim=5, heads=("z", "y"), init_sigma=0.1, init_std=0.01)
    )
    actions, log_probs = WARMUP_HEADS["prior"](actor, 64, torch.Generator().manual_seed(0))
    assert log_probs == {} and actions["z"].shape == (64, 3) and actions["y"].shape == (64, 1)
    sigma = sigma_from_y(actions["y"])
    assert (sigma - 0.1).abs().max() < 0.01  # a narrow start stays at its sigma
    held = {"z": torch.randn(2, 3), "y": torch.randn(2, 1)}
    again, _ = WARMUP_HEADS["prior"](actor, 2, noise=held)
    mean, log_std = actor.prior()["z"]
    torch.testing.assert_close(again["z"], torch.tanh(mean + log_std.exp() * held["z"]))
    wide = HighLevelPolicy(HighLevelConfig(obs_dim=4, action_dim=3, embed_dim=5, heads=("z", "y"), init_std=1.0))
    spread = WARMUP_HEADS["prior"](wide, 4096, torch.Generator().manual_seed(0))[0]["z"]
    assert 0.55 < spread.std().item() < 0.7  # tanh of N(0, 1): std about 0.63
