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
    first = collector.step(warmup="uniform")
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
    t = collector.step(warmup="uniform")
    assert t.reward.tolist() == [1.0, 0.0] and t.done.tolist() == [1.0, 0.0]
    assert t.success.tolist() == [True, False] and t.episode_end.tolist() == [True, False]
    assert collector.successes == 1 and torch.equal(t.sigma, torch.zeros(2))  # DSRL: sigma stays 0


def test_episode_exploration_holds_each_envs_heads_until_its_episode_ends(tiny_base_policy, monkeypatch):
    collector, envs = make_collector(tiny_base_policy, episode_length=12, heads=("z", "y"), exploration="episode")
    first = collector.step(warmup="uniform")  # warm-up: held uniform draws
    second = collector.step(warmup="uniform")
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


def _record_env_use(envs):
    """Per env: the seeds its episodes started from and the steps it took."""
    seeds, steps = {i: [] for i in range(envs.num_envs)}, [0] * envs.num_envs
    for i, env in enumerate(envs.envs):
        real_reset, real_step = env.reset, env.step

        def reset(*, seed=None, _i=i, _real=real_reset, **kw):
            seeds[_i].append(seed)
            return _real(seed=seed, **kw)

        def step(action, _i=i, _real=real_step):
            steps[_i] += 1
            return _real(action)

        env.reset, env.step = reset, step
    return seeds, steps


def test_play_episodes_retires_each_env_after_its_share(tiny_base_policy):
    import numpy as np

    from tmrl_vla.rl.evaluation import play_episodes

    collector, envs = make_collector(tiny_base_policy, episode_length=7, heads=("z",))
    seeds, steps = _record_env_use(envs)
    assert play_episodes(collector, torch.tensor([1, 3])) == 0  # every episode times out
    # env 0 stops after one 7-step episode: it is neither reset nor stepped while env 1 plays on
    assert steps == [7, 21] and [len(s) for s in seeds.values()] == [1, 3]
    assert collector.retired.all() and collector.episodes_finished == 4
    # per-env seeding is off here (the collector's default): seeds follow the order episodes start
    assert seeds == {0: [0], 1: [1, 2, 3]}
    # a retired env's rows are absent from the transitions, and the batch's env_index says so
    collector.reset()
    collector.retire_after_episode[:] = [True, False]
    first, second = collector.step(), collector.step()
    assert first.env_index.tolist() == [0, 1] and first.episode_end.tolist() == [False, False]
    assert second.episode_end.tolist() == [True, True] and collector.retired.tolist() == [True, False]
    third = collector.step()
    assert third.env_index.tolist() == [1] and third.obs.shape[0] == third.reward.shape[0] == 1
    np.testing.assert_array_equal(envs.done, [True, False])
    # retiring an env by hand between decisions: the cached next observation (both envs) is not reused
    collector.reset()
    collector.step()
    collector.retired[0] = True
    before = list(steps)
    fourth = collector.step()
    assert fourth.env_index.tolist() == [1] and fourth.obs.shape[0] == 1
    # the unfinished retired env is not stepped; env 1 times out 2 steps into this chunk (limit 7)
    assert steps[0] == before[0] and steps[1] == before[1] + 2 and fourth.episode_end.tolist() == [True]


def test_per_env_seeding_fixes_the_initial_states_whatever_the_episode_lengths(tiny_base_policy):
    from tmrl_vla.rl.collector import DecisionCollector
    from tmrl_vla.rl.evaluation import play_episodes

    collector, envs = make_collector(tiny_base_policy, episode_length=7, heads=("z",))
    c = collector
    per_env = DecisionCollector(envs, c.csp, c.actor, c.preprocessor, c.postprocessor, seed=100, seeding="per_env")
    seeds, _ = _record_env_use(envs)
    play_episodes(per_env, torch.tensor([3, 1]))
    assert seeds == {0: [100, 102, 104], 1: [101]}  # env i's k-th episode: seed + k * num_envs + i
    import pytest

    with pytest.raises(ValueError, match="share >= 1"):
        play_episodes(per_env, torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="seeding"):
        DecisionCollector(envs, collector.csp, collector.actor, None, None, seeding="random")
