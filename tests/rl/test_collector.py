import torch

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
from tmrl_vla.rl.collector import DecisionCollector


def make_collector(tiny_base_policy, episode_length, heads=("z", "y", "eps_c"), exploration="decision"):
    from tmrl_vla.policies import load_lerobot_policy

    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    actor = HighLevelPolicy(
        HighLevelConfig(
            obs_dim=2 * csp.embed_width + 6, action_dim=6, embed_dim=csp.embed_width, heads=heads, hidden=16
        )
    )
    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(episode_length=episode_length)), 2)
    return DecisionCollector(envs, csp, actor, pre, post, n_exec=5, seed=0, exploration=exploration), envs


def test_time_outs_bootstrap_with_the_true_next_observation(tiny_base_policy):
    collector, envs = make_collector(tiny_base_policy, episode_length=7)
    first = collector.step(uniform=True)
    assert first.obs.shape == first.next_obs.shape == (2, 2 * collector.csp.embed_width + 6)
    assert not first.episode_end.any()
    assert torch.equal(collector._encoded[1], first.next_obs)  # reused by the next decision
    before_reset = {}
    real_reset_one = envs.reset_one

    def spy(i, seed):
        before_reset[i] = {k: v.copy() for k, v in envs._last[i].items()}
        return real_reset_one(i, seed)

    envs.reset_one = spy
    second = collector.step()  # the limit is 7 steps: both envs time out 2 steps into this chunk
    assert second.episode_end.all() and not second.success.any()
    assert torch.equal(second.done, torch.zeros(2))  # a time-out is not terminal
    assert sorted(before_reset) == [0, 1]
    for i, last in before_reset.items():
        expected = collector._batch({k: v[None] for k, v in last.items()})["observation.state"][0]
        torch.testing.assert_close(second.next_obs[i, -6:], expected)  # the true last observation
        reset_state = collector._batch({k: v[None] for k, v in envs._last[i].items()})["observation.state"][0]
        assert not torch.allclose(second.next_obs[i, -6:], reset_state)  # not the next episode's start
    assert collector.episodes_finished == 2 and collector._encoded is None
    assert set(second.actions) == {"z", "y", "eps_c"} and second.sigma.shape == (2,)


def test_reward_is_summed_and_done_only_on_success(tiny_base_policy, monkeypatch):
    collector, envs = make_collector(tiny_base_policy, episode_length=50, heads=("z",))
    calls = {"n": 0}
    real_step = PickCubeEnv.step

    def fake_step(self, action):
        obs, r, term, trunc, info = real_step(self, action)
        calls["n"] += 1
        if calls["n"] == 3:  # env 0's second step: pretend success
            return obs, 1.0, True, False, {"is_success": True}
        return obs, r, term, trunc, info

    monkeypatch.setattr(PickCubeEnv, "step", fake_step)
    t = collector.step(uniform=True)
    assert t.reward.tolist() == [1.0, 0.0] and t.done.tolist() == [1.0, 0.0]
    assert t.success.tolist() == [True, False] and t.episode_end.tolist() == [True, False]
    assert collector.successes == 1 and torch.equal(t.sigma, torch.zeros(2))  # DSRL: sigma stays 0


def test_episode_exploration_holds_each_envs_heads_until_its_episode_ends(tiny_base_policy, monkeypatch):
    collector, envs = make_collector(tiny_base_policy, episode_length=12, heads=("z", "y"), exploration="episode")
    first = collector.step(uniform=True)  # warm-up: held uniform draws
    second = collector.step(uniform=True)
    for h in ("z", "y"):
        assert torch.equal(first.actions[h], second.actions[h])
        assert first.actions[h].abs().max() <= 1 and not torch.equal(first.actions[h][0], first.actions[h][1])
    held = {h: v.clone() for h, v in collector.held_noise.items()}
    # The policy's samples follow its mean plus the held noise: equal observations, equal actions.
    third = collector.step()  # steps 11-12 of 12: both episodes time out, both envs get new noise
    expected, _ = collector.actor.sample(third.obs, noise=held)
    for h in ("z", "y"):
        torch.testing.assert_close(third.actions[h], expected[h])
        assert not torch.equal(collector.held_noise[h], held[h])

    # Only the env whose episode ended draws new noise.
    real_step = PickCubeEnv.step
    calls = {"n": 0}

    def fake_step(self, action):
        obs, r, term, trunc, info = real_step(self, action)
        calls["n"] += 1
        if calls["n"] == 1:  # env 0 succeeds on its first step
            return obs, 1.0, True, False, {"is_success": True}
        return obs, r, term, trunc, info

    monkeypatch.setattr(PickCubeEnv, "step", fake_step)
    held = {h: v.clone() for h, v in collector.held_noise.items()}
    collector.step()
    for h in ("z", "y"):
        assert not torch.equal(collector.held_noise[h][0], held[h][0])
        assert torch.equal(collector.held_noise[h][1], held[h][1])


def test_unknown_exploration_mode_is_refused(tiny_base_policy):
    import pytest

    with pytest.raises(ValueError, match="exploration"):
        make_collector(tiny_base_policy, episode_length=5, exploration="chunk")
