import dataclasses

import pytest
import torch

from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
from tmrl_vla.rl.agent import SACAgent, SACConfig, build_agent
from tmrl_vla.rl.config import AgentConfig
from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble
from tmrl_vla.rl.replay import ReplayBuffer


def train_on_bandit(best_z: float, config: SACConfig, init_std: float | None = None) -> tuple[torch.Tensor, dict]:
    """300 SAC updates of a z-only agent on random data from a one-step bandit that pays
    -(z - best_z)^2 per dim; returns its greedy z (2,) averaged over states, and the last metrics."""
    torch.manual_seed(0)
    heads = ("z",)
    actor = HighLevelPolicy(
        HighLevelConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=heads, hidden=64, init_std=init_std)
    )
    critics = CriticEnsemble(CriticConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=heads, hidden=64, num_critics=3))
    agent = SACAgent(actor, critics, config)
    replay = ReplayBuffer(4096, 2, {"z": 2})
    z = torch.rand(4096, 2) * 2 - 1
    obs = torch.randn(4096, 2)
    replay.add(obs, {"z": z}, -((z - best_z) ** 2).sum(-1), torch.ones(4096), obs)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        metrics = agent.update(replay, g)
    greedy, _ = actor.sample(torch.randn(64, 2), deterministic=True)
    return greedy["z"].mean(0), metrics


def test_sac_learns_a_one_step_bandit():
    """Reward -(z - 0.5)^2 per dim from random data: the greedy z must move to 0.5 (off-policy SAC end to end)."""
    config = SACConfig(utd=2, batch_size=128, actor_lr=3e-3, critic_lr=3e-3, temperature_lr=3e-3)
    greedy, metrics = train_on_bandit(0.5, config)
    assert (greedy - 0.5).abs().max() < 0.15
    assert metrics["critic/loss"] < 0.05
    assert set(metrics) >= {"actor/loss", "actor/entropy_z", "actor/alpha_z", "critic/q_mean"}
    assert "actor/anchor_kl" not in metrics  # off by default


def test_target_critics_trail_the_online_ones():
    actor = HighLevelPolicy(HighLevelConfig(obs_dim=2, action_dim=2, embed_dim=3, hidden=16))
    critics = CriticEnsemble(CriticConfig(obs_dim=2, action_dim=2, embed_dim=3, hidden=16))
    agent = SACAgent(actor, critics, SACConfig(utd=1, batch_size=8, tau=0.5))
    replay = ReplayBuffer(16, 2, {"z": 2, "y": 1, "eps_c": 3})
    replay.add(
        torch.randn(16, 2),
        {"z": torch.rand(16, 2), "y": torch.rand(16, 1), "eps_c": torch.rand(16, 3)},
        torch.randn(16),
        torch.zeros(16),
        torch.randn(16, 2),
    )
    before = [p.detach().clone() for p in agent.target_critics.parameters()]
    agent.update(replay)
    after = list(agent.target_critics.parameters())
    online = list(agent.critics.parameters())
    assert not any(p.requires_grad for p in after)
    moved = [not torch.equal(a, b) for a, b in zip(after, before, strict=True)]
    assert any(moved) and not all(torch.equal(a, o) for a, o in zip(after, online, strict=True))


def test_heads_must_match():
    actor = HighLevelPolicy(HighLevelConfig(obs_dim=2, action_dim=2, embed_dim=3, heads=("z",)))
    critics = CriticEnsemble(CriticConfig(obs_dim=2, action_dim=2, embed_dim=3))
    with pytest.raises(ValueError, match="heads"):
        SACAgent(actor, critics)


def test_self_imitation_pulls_the_actor_to_its_successful_actions():
    """With a flat critic (no reward anywhere), only the imitation term can move the actor: towards
    the actions of the success buffer with a weight, nowhere in particular without."""

    def greedy_after(weight: float) -> tuple[torch.Tensor, dict]:
        torch.manual_seed(0)
        heads = ("z", "y")
        actor = HighLevelPolicy(HighLevelConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=heads, hidden=32))
        critics = CriticEnsemble(CriticConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=heads, hidden=32))
        agent = SACAgent(actor, critics, SACConfig(utd=1, batch_size=64, actor_lr=3e-3, imitation_weight=weight))
        replay = ReplayBuffer(256, 2, {"z": 2, "y": 1})
        obs = torch.randn(256, 2)
        replay.add(
            obs,
            {"z": torch.rand(256, 2) * 2 - 1, "y": torch.rand(256, 1) * 2 - 1},
            torch.zeros(256),
            torch.zeros(256),
            obs,
        )
        wins = ReplayBuffer(64, 2, {"z": 2, "y": 1})
        good = {"z": torch.tensor([[0.6, -0.4]]).expand(64, 2), "y": torch.full((64, 1), -0.7)}
        wins.add(torch.randn(64, 2), good, torch.ones(64), torch.ones(64), torch.randn(64, 2))
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            metrics = agent.update(replay, g, successes=wins)
        greedy, _ = actor.sample(torch.randn(128, 2), deterministic=True)
        return torch.cat([greedy["z"], greedy["y"]], -1).mean(0), metrics

    target = torch.tensor([0.6, -0.4, -0.7])
    imitated, metrics = greedy_after(1.0)
    plain, plain_metrics = greedy_after(0.0)
    assert (imitated - target).abs().max() < 0.1
    assert (plain - target).abs().max() > 0.3
    assert "actor/imitation_nll" in metrics and "actor/imitation_nll" not in plain_metrics


def test_imitation_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="imitation_weight"):
        SACConfig(imitation_weight=-1.0)


def test_dsrl_ignores_a_sigma_start_as_it_ignores_heads():
    from tmrl_vla.rl.agent import build_agent
    from tmrl_vla.rl.config import AgentConfig, SACConfig

    widths = dict(obs_dim=4, action_dim=2, embed_dim=3)
    dsrl = build_agent(AgentConfig(kind="dsrl", init_sigma=0.1, hidden=8, num_critics=2), SACConfig(), **widths)
    assert dsrl.actor.config.heads == ("z",) and dsrl.actor.config.init_sigma is None
    tmrl = build_agent(AgentConfig(init_sigma=0.1, hidden=8, num_critics=2), SACConfig(), **widths)
    assert tmrl.actor.config.init_sigma == 0.1


def test_the_anchor_holds_the_actor_near_its_start_against_a_critics_pull():
    """A bandit that pays -(z - 0.8)^2 per dim. Without the anchor the greedy z goes to about 0.8;
    with weight w and a start of N(0, 1) before the tanh, moving the mean to u costs w u^2 / 2 per
    dim, so the greedy z goes to about the z = tanh(u) that maximises -(z - 0.8)^2 - w u^2 / 2."""

    def greedy_z(weight: float) -> tuple[float, dict]:
        config = SACConfig(utd=2, batch_size=128, actor_lr=3e-3, critic_lr=3e-3, anchor_weight=weight)
        greedy, metrics = train_on_bandit(0.8, config, init_std=1.0)
        return greedy.mean().item(), metrics

    def regularised_optimum(weight: float) -> float:
        u = torch.linspace(0.0, 3.0, 30001)
        return torch.tanh(u)[(-((torch.tanh(u) - 0.8) ** 2) - weight * u**2 / 2).argmax()].item()

    free, free_metrics = greedy_z(0.0)
    held, metrics = greedy_z(1.0)
    heavy, _ = greedy_z(5.0)
    assert free > 0.7
    assert regularised_optimum(1.0) == pytest.approx(0.47, abs=0.01)
    assert held == pytest.approx(regularised_optimum(1.0), abs=0.12)
    assert heavy < held < free and heavy == pytest.approx(regularised_optimum(5.0), abs=0.12)
    assert "actor/anchor_kl" in metrics and "actor/anchor_kl" not in free_metrics


def test_anchor_weight_must_not_be_negative():
    with pytest.raises(ValueError, match="anchor_weight"):
        SACConfig(anchor_weight=-0.5)


@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_rewards_enter_the_td_target_times_reward_scale(scale):
    """Every row ends its episode (done), so the target is the reward alone: -5 per decision (a
    robot's five -1 ticks) reads -5 unscaled and -0.05 at 0.01, the critics' units."""
    torch.manual_seed(0)
    actor = HighLevelPolicy(HighLevelConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=("z",), hidden=8))
    critics = CriticEnsemble(CriticConfig(obs_dim=2, action_dim=2, embed_dim=1, heads=("z",), hidden=8, num_critics=2))
    agent = SACAgent(actor, critics, SACConfig(utd=1, batch_size=16, reward_scale=scale))
    replay = ReplayBuffer(32, 2, {"z": 2})
    replay.add(
        torch.randn(32, 2),
        {"z": torch.rand(32, 2) * 2 - 1},
        torch.full((32,), -5.0),
        torch.ones(32),
        torch.randn(32, 2),
    )
    metrics = agent.update(replay, torch.Generator().manual_seed(0))
    assert metrics["critic/target_mean"] == pytest.approx(-5.0 * scale)


@pytest.mark.parametrize("scale", [0.0, -0.01])
def test_reward_scale_must_be_positive(scale):
    with pytest.raises(ValueError, match="reward_scale"):
        SACConfig(reward_scale=scale)


def test_a_flat_critic_lets_the_entropy_bonus_widen_a_narrow_start_and_the_anchor_holds_it():
    """Every transition pays the same: the critics say nothing, and Adam takes full-size steps along
    the entropy bonus however small the temperature, so a start at std 0.22 widens; the KL anchor
    (weight 1) keeps it where it was put."""

    def z_std_after_updates(weight: float) -> float:
        torch.manual_seed(0)
        actor = HighLevelPolicy(
            HighLevelConfig(obs_dim=4, action_dim=3, embed_dim=1, heads=("z",), hidden=32, init_std=0.22)
        )
        critics = CriticEnsemble(
            CriticConfig(obs_dim=4, action_dim=3, embed_dim=1, heads=("z",), hidden=32, num_critics=2)
        )
        agent = SACAgent(actor, critics, SACConfig(utd=1, batch_size=64, anchor_weight=weight))
        replay = ReplayBuffer(512, 4, {"z": 3})
        obs = torch.randn(512, 4)
        replay.add(
            obs,
            {"z": torch.tanh(0.22 * torch.randn(512, 3))},
            torch.full((512,), -0.05),
            torch.zeros(512),
            torch.randn(512, 4),
        )
        g = torch.Generator().manual_seed(0)
        for _ in range(60):
            agent.update(replay, g)
        with torch.no_grad():
            return actor.distribution(obs)["z"][1].exp().mean().item()

    assert z_std_after_updates(0.0) > 0.3  # 0.38 measured
    assert z_std_after_updates(1.0) == pytest.approx(0.22, abs=0.02)


def test_with_the_anchor_a_low_sigma_start_no_longer_drives_its_temperature_up():
    """sigma 0.05 at spread 0.22 has less entropy on y than SAC's usual target (-1), and the anchor
    keeps it there, so that temperature used to grow at full Adam speed for as long as the run
    lasted; aimed at the start's own entropy (what build_agent does when the anchor is on), it rests."""
    agent_config = AgentConfig(heads=("z", "y"), hidden=32, num_critics=2, init_sigma=0.05, init_std=0.22)
    sac = SACConfig(utd=1, batch_size=64, anchor_weight=1.0, temperature_lr=3e-3)

    def alpha_y_after_updates(agent: SACAgent) -> float:
        replay = ReplayBuffer(512, 4, {"z": 3, "y": 1})
        obs = torch.randn(512, 4)
        heads = {"z": torch.tanh(0.22 * torch.randn(512, 3)), "y": torch.full((512, 1), -0.9)}
        replay.add(obs, heads, torch.full((512,), -0.05), torch.zeros(512), torch.randn(512, 4))
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            agent.update(replay, g)
        return agent.actor.alphas()["y"].item()

    torch.manual_seed(0)
    anchored = build_agent(agent_config, sac, obs_dim=4, action_dim=3, embed_dim=1)
    assert anchored.actor.config.targets_from_start
    torch.manual_seed(0)
    usual = build_agent(agent_config, sac, obs_dim=4, action_dim=3, embed_dim=1)
    usual.actor.config = dataclasses.replace(usual.actor.config, targets_from_start=False)
    start = agent_config.init_temperature
    assert alpha_y_after_updates(usual) > 1.4 * start  # 1.71x measured
    assert alpha_y_after_updates(anchored) == pytest.approx(start, rel=0.1)  # 1.03x measured
