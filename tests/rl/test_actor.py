import math

import pytest
import torch

from tmrl_vla.rl.actor import (
    HighLevelConfig,
    HighLevelPolicy,
    sigma_from_y,
    tanh_gaussian_entropy,
    tanh_gaussian_log_prob,
    y_from_sigma,
    y_position,
)
from tmrl_vla.rl.sac import gaussian_kl, temperature_loss


def test_tanh_log_prob_matches_change_of_variables():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    torch.manual_seed(0)  # float64: the reference inverts tanh, which loses float32 precision for |u| > 3
    mean, log_std = torch.randn(64, 3, dtype=torch.float64), torch.randn(64, 3, dtype=torch.float64).clamp(-2, 1)
    u = mean + log_std.exp() * torch.randn(64, 3, dtype=torch.float64)
    ref = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(torch.tanh(u)).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u, mean, log_std), ref, atol=1e-6, rtol=1e-6)


def test_tanh_log_prob_against_a_numerical_density():
    """1-D: the density of y = tanh(u) integrates to one and matches a finite-difference Jacobian."""
    mean, log_std = torch.tensor([[0.3]], dtype=torch.float64), torch.tensor([[-0.2]], dtype=torch.float64)
    y = torch.linspace(-0.999, 0.999, 20001, dtype=torch.float64)[:, None]
    u = torch.atanh(y)
    density = tanh_gaussian_log_prob(u, mean.expand_as(u), log_std.expand_as(u)).exp()
    assert abs(torch.trapezoid(density, y[:, 0]).item() - 1.0) < 2e-3
    h = 1e-7
    du_dy = (torch.atanh(y + h) - torch.atanh(y - h)) / (2 * h)
    gauss = torch.distributions.Normal(mean[0, 0], log_std.exp()[0, 0]).log_prob(u[:, 0]).exp()
    torch.testing.assert_close(density, gauss * du_dy[:, 0], rtol=1e-3, atol=1e-5)


def test_heads_shapes_and_ranges():
    cfg = HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12)
    pi = HighLevelPolicy(cfg)
    actions, logp = pi.sample(torch.randn(5, 10))
    assert {k: v.shape for k, v in actions.items()} == {"z": (5, 6), "y": (5, 1), "eps_c": (5, 12)}
    assert all(v.abs().max() <= 1 for v in actions.values())
    assert set(logp) == {"z", "y", "eps_c"} and all(v.shape == (5,) for v in logp.values())
    for _mean, log_std in pi.distribution(torch.randn(5, 10)).values():
        assert log_std.min() >= -5 and log_std.max() <= 2
    assert sigma_from_y(actions["y"]).min() >= 0 and sigma_from_y(actions["y"]).max() <= 1
    with pytest.raises(ValueError, match="width"):
        pi.sample(torch.randn(5, 9))


def test_dsrl_mode_has_only_the_z_head():
    pi = HighLevelPolicy(HighLevelConfig(obs_dim=4, action_dim=6, embed_dim=960, heads=("z",)))
    actions, logp = pi.sample(torch.randn(3, 4))
    assert set(actions) == set(logp) == set(pi.log_alpha) == {"z"}
    with pytest.raises(ValueError):
        HighLevelConfig(obs_dim=4, action_dim=6, embed_dim=8, heads=("z", "w"))


def test_temperatures_move_towards_their_targets():
    cfg = HighLevelConfig(obs_dim=4, action_dim=2, embed_dim=3, target_entropy={"z": -2.0, "y": -1.0, "eps_c": -3.0})
    pi = HighLevelPolicy(cfg)
    opt = torch.optim.SGD(pi.log_alpha.parameters(), lr=0.1)
    # entropy too low for z (log pi = 5 > -target), too high for eps_c (log pi = -10)
    logp = {"z": torch.full((8,), 5.0), "y": torch.full((8,), 1.0), "eps_c": torch.full((8,), -10.0)}
    before = {h: v.item() for h, v in pi.log_alpha.items()}
    loss = sum(temperature_loss(pi.log_alpha[h], logp[h], cfg.target(h)) for h in cfg.heads)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert pi.log_alpha["z"].item() > before["z"]  # z: raise alpha to push entropy up
    assert pi.log_alpha["eps_c"].item() < before["eps_c"]  # eps_c: lower alpha
    assert pi.log_alpha["y"].item() == pytest.approx(before["y"] - 0.1 * 0.0)  # log pi == -target: no change
    assert cfg.target("z") == -2.0 and HighLevelConfig(obs_dim=1, action_dim=6, embed_dim=8).target("eps_c") == -8
    assert math.isclose(pi.alphas()["z"].item(), math.exp(pi.log_alpha["z"].item()), rel_tol=1e-6)


def test_log_prob_of_given_actions_matches_the_sampling_log_prob():
    torch.manual_seed(0)
    actor = HighLevelPolicy(HighLevelConfig(obs_dim=3, action_dim=4, embed_dim=5, hidden=16))
    obs = torch.randn(32, 3)
    actions, log_probs = actor.sample(obs)
    again = actor.log_prob(obs, actions)
    # saturated samples (|a| ~ 1) lose their pre-image to float32 rounding; the rest must agree
    inside = {h: (a.abs() < 0.999).all(-1) for h, a in actions.items()}
    for h in actions:
        torch.testing.assert_close(again[h][inside[h]], log_probs[h][inside[h]], rtol=1e-3, atol=1e-3)
    assert all(torch.isfinite(v).all() for v in actor.log_prob(obs, {h: a.sign() for h, a in actions.items()}).values())
    with pytest.raises(ValueError, match="shape"):
        actor.log_prob(obs, {**actions, "z": actions["z"][:, :2]})


def test_a_configured_start_sets_sigma_and_spread_whatever_the_state():
    cfg = HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12, heads=("z", "y"), init_sigma=0.1, init_std=1.0)
    pi = HighLevelPolicy(cfg)
    prior = pi.prior()
    assert sigma_from_y(torch.tanh(prior["y"][0])).item() == pytest.approx(0.1)
    for mean, log_std in prior.values():
        assert log_std.exp().flatten().tolist() == pytest.approx([1.0] * mean.shape[-1], rel=1e-5)
    # the prior is what the heads give for zero trunk features: the state-dependent part adds to it
    zero = pi.heads["y"](torch.zeros(1, cfg.hidden)).chunk(2, dim=-1)[0]
    torch.testing.assert_close(zero, prior["y"][0])


def test_the_sigma_map_puts_its_centre_at_y_zero_and_keeps_the_whole_range():
    y = torch.linspace(-1, 1, 201)[:, None]
    torch.testing.assert_close(sigma_from_y(y), y_position(y))  # 0.5: the paper's linear map
    for centre in (0.05, 0.1, 0.3, 0.5, 0.8):
        sigma = sigma_from_y(y, centre)
        assert sigma[0].item() == 0.0 and sigma[-1].item() == pytest.approx(1.0)
        assert sigma[100].item() == pytest.approx(centre)  # y = 0
        assert (sigma.diff() >= 0).all()
        for target in (0.02, 0.1, 0.6):
            back = sigma_from_y(torch.tensor([[y_from_sigma(target, centre)]]), centre)
            assert back.item() == pytest.approx(target, rel=1e-3)  # float32
    # a low centre gives the lower half of y to sigmas below it: where uniform warm-up draws go
    below = sigma_from_y(torch.rand(10_000, 1) * 2 - 1, 0.1) < 0.1
    assert below.float().mean().item() == pytest.approx(0.5, abs=0.02)


def test_a_start_sigma_is_met_under_a_bent_map():
    cfg = HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12, heads=("z", "y"), init_sigma=0.3, sigma_centre=0.1)
    pi = HighLevelPolicy(cfg)
    assert pi.sigma(torch.tanh(pi.prior()["y"][0])).item() == pytest.approx(0.3)
    # the actor's map is the one its decisions use; at 0.5 it is the linear one
    linear = HighLevelPolicy(HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12, heads=("z", "y")))
    y = torch.tensor([[0.0], [0.5]])
    assert pi.sigma(y).tolist() == pytest.approx([0.1, 0.75 ** (math.log(0.1) / math.log(0.5))])
    assert linear.sigma(y).tolist() == pytest.approx([0.5, 0.75])


def test_without_a_configured_start_the_heads_keep_their_random_init():
    torch.manual_seed(0)
    plain = HighLevelPolicy(HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12))
    torch.manual_seed(0)
    unset = HighLevelPolicy(HighLevelConfig(obs_dim=10, action_dim=6, embed_dim=12, init_sigma=None, init_std=None))
    for a, b in zip(plain.state_dict().values(), unset.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert plain.prior()["y"][0].abs().item() < 0.2  # sigma starts near 0.5


def test_the_anchor_is_the_configured_start_and_does_not_move_with_the_biases():
    cfg = HighLevelConfig(obs_dim=4, action_dim=3, embed_dim=5, heads=("z", "y"), init_sigma=0.05, init_std=1.0)
    assert cfg.start("z") == (0.0, 0.0)
    y0, log_std0 = cfg.start("y")
    assert sigma_from_y(torch.tensor([[math.tanh(y0)]])).item() == pytest.approx(0.05) and log_std0 == 0.0
    plain = HighLevelConfig(obs_dim=4, action_dim=3, embed_dim=5)
    assert plain.start("eps_c") == (0.0, pytest.approx(-1.5))  # the middle of [-5, 2]: a raw output of 0
    pi = HighLevelPolicy(cfg)
    obs = torch.randn(7, 4)
    with torch.no_grad():
        pi.heads["z"].bias.add_(0.3)  # training moves the biases; the anchor stays where it was configured
        distribution = pi.distribution(obs)
        kl = pi.anchor_kl(distribution)
        for head, (mean, log_std) in distribution.items():
            m0, s0 = cfg.start(head)
            expected = gaussian_kl(mean, log_std, torch.full_like(mean, m0), torch.full_like(log_std, s0))
            torch.testing.assert_close(kl[head], expected)
            assert kl[head].shape == (7,) and (kl[head] > 0).all()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(init_sigma=0.0), "init_sigma must lie strictly between 0 and 1"),
        (dict(init_sigma=1.0), "init_sigma must lie strictly between 0 and 1"),
        (dict(init_std=10.0), "init_std must lie strictly between"),
        (dict(init_sigma=0.2, heads=("z",)), "has no y head"),
        (dict(sigma_centre=1.0), "sigma_centre must lie strictly between 0 and 1"),
    ],
)
def test_impossible_starts_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        HighLevelConfig(obs_dim=4, action_dim=2, embed_dim=3, **options)


@pytest.mark.parametrize("mean,std", [(0.0, 0.22), (math.atanh(-0.9), 0.22), (0.0, 1.0), (1.0, 0.05)])
def test_the_tanh_gaussian_entropy_matches_its_monte_carlo_estimate(mean, std):
    u = mean + std * torch.randn(400_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_std = math.log(std)
    monte_carlo = -tanh_gaussian_log_prob(u, torch.full_like(u, mean), torch.full_like(u, log_std)).mean().item()
    assert tanh_gaussian_entropy(mean, log_std) == pytest.approx(monte_carlo, abs=5e-3)


def test_an_anchored_actor_aims_its_temperatures_at_its_start_unless_a_target_is_named():
    shape = dict(obs_dim=3, action_dim=6, embed_dim=4, heads=("z", "y"), init_sigma=0.05, init_std=0.22)
    plain = HighLevelConfig(**shape)
    anchored = HighLevelConfig(**shape, targets_from_start=True)
    named = HighLevelConfig(**shape, targets_from_start=True, target_entropy={"y": -3.0})
    assert (plain.target("z"), plain.target("y")) == (-6.0, -1.0)
    # sigma 0.05 at spread 0.22: below the usual -1 on y, so without this its temperature only grows
    assert anchored.target("y") == pytest.approx(tanh_gaussian_entropy(*anchored.start("y")))
    assert anchored.target("y") < -1.5
    assert anchored.target("z") == pytest.approx(6 * tanh_gaussian_entropy(0.0, math.log(0.22)))
    assert named.target("y") == -3.0 and named.target("z") == anchored.target("z")
