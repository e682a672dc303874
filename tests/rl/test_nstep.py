import pytest
import torch

from tmrl_vla.rl.collector import Transitions
from tmrl_vla.rl.nstep import NStepReturns


def decision(k, reward=(0.0, 0.0), ended=(False, False), success=(False, False)):
    """Decision k of two envs: observations k and k + 1 (env 1 shifted by 100), z = k."""
    obs = torch.tensor([[float(k)], [100.0 + k]])
    return Transitions(
        obs=obs,
        actions={"z": obs.clone()},
        reward=torch.tensor(reward),
        done=torch.tensor(success, dtype=torch.float32),
        next_obs=obs + 1,
        episode_end=torch.tensor(ended),
        success=torch.tensor(success),
        sigma=torch.zeros(2),
        env_index=torch.arange(2),
    )


def test_rows_wait_for_n_decisions_then_carry_discounted_returns():
    ns = NStepReturns(num_envs=2, n=3, gamma=0.5)
    assert ns.push(decision(0)) is None and ns.push(decision(1)) is None
    rows = ns.push(decision(2))
    assert rows["env"].tolist() == [0, 1] and rows["obs"].flatten().tolist() == [0.0, 100.0]
    assert rows["steps"].tolist() == [3.0, 3.0] and rows["done"].tolist() == [0.0, 0.0]
    assert rows["next_obs"].flatten().tolist() == [3.0, 103.0]  # the observation n decisions later
    # env 0 succeeds at decision 3: its three pending rows leave with the rest of the episode
    rows = ns.push(decision(3, reward=(1.0, 0.0), ended=(True, False), success=(True, False)))
    env0 = rows["env"] == 0
    assert rows["obs"][env0].flatten().tolist() == [1.0, 2.0, 3.0]
    assert rows["reward"][env0].tolist() == [0.25, 0.5, 1.0]  # gamma ** k before the success
    assert rows["steps"][env0].tolist() == [3.0, 2.0, 1.0] and rows["done"][env0].tolist() == [1.0] * 3
    assert rows["next_obs"][env0].flatten().tolist() == [4.0] * 3
    assert torch.equal(rows["actions"]["z"], rows["obs"])
    assert rows["obs"][~env0].flatten().tolist() == [101.0] and len(ns.pending[0]) == 0


def test_time_out_is_not_terminal_and_one_step_passes_rows_straight_through():
    ns = NStepReturns(num_envs=2, n=4, gamma=0.9)
    ns.push(decision(0))
    rows = ns.push(decision(1, ended=(False, True)))  # env 1 times out
    assert rows["env"].tolist() == [1, 1] and rows["done"].tolist() == [0.0, 0.0]
    assert rows["steps"].tolist() == [2.0, 1.0]  # bootstrapped from the true last observation
    one = NStepReturns(num_envs=2, n=1, gamma=0.9)
    rows = one.push(decision(0, reward=(0.5, 0.0)))
    assert rows["steps"].tolist() == [1.0, 1.0] and rows["reward"].tolist() == [0.5, 0.0]
    assert one.flush() is None


def test_flush_and_state_round_trip():
    ns = NStepReturns(num_envs=2, n=5, gamma=0.5)
    for k in range(3):
        ns.push(decision(k))
    restored = NStepReturns(num_envs=2, n=5, gamma=0.5)
    restored.load_state_dict(ns.state_dict())
    rows = restored.flush()
    assert rows["steps"].tolist() == [3.0, 2.0, 1.0, 3.0, 2.0, 1.0]
    assert rows["next_obs"].flatten().tolist() == [3.0] * 3 + [103.0] * 3
    with pytest.raises(ValueError, match="envs"):
        NStepReturns(num_envs=3, n=5, gamma=0.5).load_state_dict(ns.state_dict())
    with pytest.raises(ValueError, match="n_step"):
        NStepReturns(num_envs=2, n=0, gamma=0.5)
