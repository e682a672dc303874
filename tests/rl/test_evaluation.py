"""Evaluating a high-level agent (tmrl_vla.rl.evaluation): episode shares, the collector factory,
and evaluations from fixed initial states on a bounded number of envs."""

import pytest
import torch

from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.rl.collector import DecisionCollector
from tmrl_vla.rl.config import AgentConfig, ObservationConfig
from tmrl_vla.rl.evaluation import EVAL_SEED, Steering, episode_shares, evaluate, make_collector

# ---------------------------------------------------------------------------------- episode shares


@pytest.mark.parametrize(
    ("episodes", "num_envs", "shares"),
    [(10, 4, [3, 3, 2, 2]), (8, 4, [2, 2, 2, 2]), (5, 1, [5]), (7, 3, [3, 2, 2]), (3, 3, [1, 1, 1])],
)
def test_episodes_are_split_evenly_the_first_envs_taking_the_rest(episodes, num_envs, shares):
    split = episode_shares(episodes, num_envs)
    assert split.tolist() == shares
    assert int(split.sum()) == episodes and split.dtype == torch.long


def test_more_envs_than_episodes_leaves_some_envs_without_a_share():
    assert episode_shares(2, 4).tolist() == [1, 1, 0, 0]


# ---------------------------------------------------------------------------------- the tiny frozen policy


@pytest.fixture(scope="module")
def frozen(tiny_base_policy):
    """(csp, preprocessor, postprocessor, actor): the tiny policy and a deterministic z + sigma actor."""
    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.observation import feature_width

    policy, pre, post = load_lerobot_policy(tiny_base_policy)
    csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
    torch.manual_seed(0)
    actor = HighLevelPolicy(
        HighLevelConfig(
            obs_dim=feature_width(csp, 6, 1, None),
            action_dim=6,
            embed_dim=csp.embed_width,
            heads=("z", "y"),
            hidden=16,
        )
    )
    return csp, pre, post, actor


@pytest.fixture
def make_envs():
    """``make_envs(n)``: n batched 6-step pick envs, closed when the test ends."""
    built = []

    def make(n):
        built.append(BatchedEnv(lambda: PickCubeEnv(PickCubeConfig(episode_length=6)), n))
        return built[-1]

    yield make
    for envs in built:
        envs.close()


def test_make_collector_passes_the_agent_and_observation_settings_through(frozen, make_envs):
    csp, pre, post, actor = frozen
    envs = make_envs(2)
    steering = Steering(csp, actor, pre, post, AgentConfig(n_exec=3, z_scale=0.5), ObservationConfig(image_grid=2))
    collector = make_collector(envs, steering, seed=17, exploration="episode", seeding="per_env")
    assert isinstance(collector, DecisionCollector)
    assert (collector.n_exec, collector.z_scale, collector.image_grid) == (3, 0.5, 2)
    assert (collector.seed, collector.next_seed) == (17, 17)
    assert (collector.exploration, collector.seeding) == ("episode", "per_env")
    assert collector.envs is envs and collector.csp is csp and collector.actor is actor
    assert collector.preprocessor is pre and collector.postprocessor is post and collector.encoder is None
    assert torch.equal(collector.generator.get_state(), torch.Generator().manual_seed(17).get_state())


def test_make_collector_defaults_to_a_seed_zero_stream_with_decision_exploration(frozen, make_envs):
    csp, pre, post, actor = frozen
    envs = make_envs(1)
    collector = make_collector(envs, Steering(csp, actor, pre, post, AgentConfig(), ObservationConfig()))
    assert (collector.n_exec, collector.z_scale, collector.image_grid) == (5, 1.0, 1)
    assert (collector.seed, collector.exploration, collector.seeding) == (0, "decision", "stream")


def test_make_collector_refuses_an_unknown_seeding(frozen, make_envs):
    csp, pre, post, actor = frozen
    envs = make_envs(1)
    with pytest.raises(ValueError, match=r"seeding must be 'stream' or 'per_env', got 'random'"):
        make_collector(envs, Steering(csp, actor, pre, post, AgentConfig(), ObservationConfig()), seeding="random")


# ---------------------------------------------------------------------------------- evaluate


@pytest.fixture
def even_seeds_succeed(monkeypatch):
    """Episodes from even seeds succeed at their 2nd step, the others time out; every reset's seed
    is recorded, and every env built is counted."""
    seen = {"seeds": [], "built": 0}
    real_init, real_reset, real_step = PickCubeEnv.__init__, PickCubeEnv.reset, PickCubeEnv.step

    def init(self, config=None):
        seen["built"] += 1
        real_init(self, config)

    def reset(self, *, seed=None, options=None):
        self.test_seed = seed
        seen["seeds"].append(seed)
        return real_reset(self, seed=seed, options=options)

    def step(self, action):
        obs, r, term, trunc, info = real_step(self, action)
        if self._t >= 2 and self.test_seed % 2 == 0:
            return obs, 1.0, True, False, {"is_success": True}
        return obs, 0.0, False, trunc, {**info, "is_success": False}

    monkeypatch.setattr(PickCubeEnv, "__init__", init)
    monkeypatch.setattr(PickCubeEnv, "reset", reset)
    monkeypatch.setattr(PickCubeEnv, "step", step)
    return seen


def run_evaluate(frozen, *, episodes, num_envs):
    csp, pre, post, actor = frozen
    steering = Steering(csp, actor, pre, post, AgentConfig(heads=("z", "y")), ObservationConfig())
    make_env = lambda: PickCubeEnv(PickCubeConfig(episode_length=6))  # noqa: E731
    return evaluate(make_env, steering, episodes=episodes, num_envs=num_envs)


def test_evaluation_starts_from_the_same_states_and_scores_the_same_twice(frozen, even_seeds_succeed):
    first = run_evaluate(frozen, episodes=5, num_envs=2)
    first_seeds = list(even_seeds_succeed["seeds"])
    even_seeds_succeed["seeds"].clear()
    assert run_evaluate(frozen, episodes=5, num_envs=2) == first
    assert even_seeds_succeed["seeds"] == first_seeds
    # env i's k-th episode starts from EVAL_SEED + 2k + i; 5 episodes: env 0 plays 3, env 1 plays 2
    assert sorted(first_seeds) == [EVAL_SEED + k for k in range(5)]
    assert first == pytest.approx(3 / 5)  # the even seeds E, E + 2, E + 4 (EVAL_SEED is even) succeed


def test_evaluation_uses_no_more_envs_than_episodes(frozen, even_seeds_succeed):
    assert run_evaluate(frozen, episodes=3, num_envs=8) == pytest.approx(2 / 3)
    assert even_seeds_succeed["built"] == 3
    assert sorted(even_seeds_succeed["seeds"]) == [EVAL_SEED, EVAL_SEED + 1, EVAL_SEED + 2]  # one each


def test_evaluation_uses_at_most_num_envs(frozen, even_seeds_succeed):
    assert run_evaluate(frozen, episodes=4, num_envs=1) == pytest.approx(2 / 4)
    assert even_seeds_succeed["built"] == 1
    assert even_seeds_succeed["seeds"] == [EVAL_SEED + k for k in range(4)]  # one env plays them in order


def test_evaluation_leaves_the_random_streams_alone(frozen, make_envs, even_seeds_succeed):
    """Neither torch's global generator nor a training collector's generator moves: evaluation
    draws its CSP context noise from its own collector's generator."""
    csp, pre, post, actor = frozen
    envs = make_envs(2)
    steering = Steering(csp, actor, pre, post, AgentConfig(heads=("z", "y")), ObservationConfig())
    training = make_collector(envs, steering, seed=3)
    training.step()  # sigma > 0 drew context noise from its generator
    torch.manual_seed(123)
    global_state, training_state = torch.get_rng_state(), training.generator.get_state()
    run_evaluate(frozen, episodes=2, num_envs=2)
    assert torch.equal(torch.get_rng_state(), global_state)
    assert torch.equal(training.generator.get_state(), training_state)
    assert not torch.equal(training_state, torch.Generator().manual_seed(3).get_state())  # it did draw


def test_evaluation_closes_its_envs(frozen, even_seeds_succeed, monkeypatch):
    closed = []
    real_close = PickCubeEnv.close
    monkeypatch.setattr(PickCubeEnv, "close", lambda self: closed.append(self) or real_close(self))
    run_evaluate(frozen, episodes=2, num_envs=2)
    assert len(closed) == 2
