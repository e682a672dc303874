"""Evaluating a high-level agent: one collector factory, fixed shares of episodes, fixed initial states.

Every evaluation of every agent starts from the same initial states (``seeding="per_env"``: env i's
k-th episode gets the seed ``EVAL_SEED + k * num_envs + i``), so two readings, or two agents, differ
only by the policy; and each env plays a fixed share of the episodes and then retires, because the
first N endings over all envs are biased towards short episodes, which on tasks where success ends
an episode are successes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.rl.collector import DecisionCollector
from tmrl_vla.rl.config import AgentConfig, ObservationConfig
from tmrl_vla.rl.encoder import ObservationEncoder

EVAL_SEED = 4_000_000_000  # evaluation episodes' seeds start here, far from every training seed


@dataclass(frozen=True)
class Steering:
    """A frozen policy and the high-level agent that steers it: what a collector needs besides its envs."""

    csp: CSPPolicy  # the frozen (CSP) policy
    actor: Any  # the high-level policy, or anything with its ``sample`` and ``config`` (e.g. fixed heads)
    preprocessor: Any  # the policy's LeRobot processors
    postprocessor: Any
    agent: AgentConfig  # how its chunks run (n_exec, z_scale)
    observation: ObservationConfig  # what it observes
    encoder: ObservationEncoder | None = None  # the separate observation encoder, if the agent uses one


def agent_steering(path: str) -> tuple[Steering, Any]:
    """A saved agent (a ``tmrl`` LeRobot policy directory or Hub repo) as the :class:`Steering` the
    evaluation plays, with its processors; returns it and the loaded ``TMRLAgentPolicy``."""
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.policy.modeling_tmrl import TMRLAgentPolicy

    agent = TMRLAgentPolicy.from_pretrained(path)
    pre, post = make_pre_post_processors(agent.config, pretrained_path=path)
    c = agent.config
    return Steering(agent.csp, agent.actor, pre, post, c.agent, c.observation, agent.encoder), agent


def make_collector(
    envs: BatchedEnv, steering: Steering, *, seed: int = 0, exploration: str = "decision", seeding: str = "stream"
) -> DecisionCollector:
    """The one way a :class:`DecisionCollector` is built (training, evaluation, analysis scripts)."""
    s = steering
    return DecisionCollector(
        envs,
        s.csp,
        s.actor,
        s.preprocessor,
        s.postprocessor,
        n_exec=s.agent.n_exec,
        z_scale=s.agent.z_scale,
        seed=seed,
        image_grid=s.observation.image_grid,
        exploration=exploration,
        encoder=s.encoder,
        seeding=seeding,
    )


def episode_shares(episodes: int, num_envs: int) -> torch.Tensor:
    """``episodes`` split as evenly as possible over ``num_envs`` envs (the first ones take the rest)."""
    return torch.tensor([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])


@torch.no_grad()
def evaluate(make_env: Callable[[], gym.Env], steering: Steering, *, episodes: int, num_envs: int) -> float:
    """Success rate of the deterministic agent over ``episodes`` episodes from the fixed evaluation
    states, on at most ``num_envs`` fresh envs."""
    envs = BatchedEnv(make_env, min(num_envs, episodes))
    try:
        collector = make_collector(envs, steering, seed=EVAL_SEED, seeding="per_env")
        wins = play_episodes(collector, episode_shares(episodes, envs.num_envs), deterministic=True)
    finally:
        envs.close()
    return wins / episodes


def play_episodes(
    collector: DecisionCollector, per_env: torch.Tensor, *, deterministic: bool = False, warmup: str | None = None
) -> int:
    """Reset ``collector`` and step it until env i has ended ``per_env[i]`` episodes; returns the
    successes among them. An env retires once it has played its share, so no time goes on episodes
    that would not count. ``warmup``: every decision drawn as that warm-up draws it (e.g. ``"prior"``:
    the actor's start), not by the actor.

    A fixed share per env, rather than the first N endings over all envs: the first endings are
    biased towards short episodes, and on tasks where success ends an episode, those are successes.
    With ``seeding="per_env"`` the episodes' initial states are then fixed in advance.
    """
    per_env = torch.as_tensor(per_env, dtype=torch.long)
    if per_env.shape != (collector.envs.num_envs,) or (per_env < 1).any():
        raise ValueError(
            f"per_env needs a share >= 1 for each of the {collector.envs.num_envs} envs (use fewer envs "
            f"for fewer episodes), got {per_env.tolist()}"
        )
    collector.reset()
    played = np.zeros(len(per_env), dtype=np.int64)
    quota = per_env.numpy()
    wins = 0
    while (played < quota).any():
        collector.retire_after_episode[:] = played + 1 >= quota
        t = collector.step(deterministic=deterministic, warmup=warmup)
        index = t.env_index.numpy()
        ended = t.episode_end.numpy()
        wins += int(t.success.numpy()[ended].sum())
        np.add.at(played, index[ended], 1)
    collector.retire_after_episode[:] = False
    return wins
