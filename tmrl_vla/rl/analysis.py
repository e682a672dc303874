"""Three analyses of what a high-level agent can do and does (``eval/fixed_heads.py``,
``eval/start_spread.py``, ``eval/sigma_trace.py``).

* Fixed settings: one (z, sigma) held for whole episodes, scored on the same initial states for
  every setting. It measures what an agent could reach without reading the state at all, and how
  rare such settings are in the space the agent explores (how hard the search is).
* The agent's start: an untrained actor at a given ``init_std`` and ``init_sigma``, played the way
  the prior warm-up plays it, against the base policy with its own noise. It measures how much of
  the base's success the first episodes keep, before any learning.
* Sigma over an episode: a trained agent's sigma at every decision next to the gripper joint. The
  TMRL paper saw sigma low while grasping (precision: read the context) and high while reaching.
"""

from __future__ import annotations

import numpy as np
import torch

from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy, sigma_from_y
from tmrl_vla.rl.config import AgentConfig, ObservationConfig
from tmrl_vla.rl.evaluation import Steering, make_collector, play_episodes


class FixedHeads:
    """A stand-in high-level policy that answers every observation with the same head values."""

    def __init__(self, actions: dict[str, torch.Tensor]) -> None:
        self.actions = actions

    def sample(self, features, *, deterministic=False, generator=None, noise=None):
        b = features.shape[0]
        return {h: v.expand(b, -1).clone() for h, v in self.actions.items()}, {}

    def sigma(self, y: torch.Tensor) -> torch.Tensor:
        """The linear map: settings are drawn with sigma uniform in [0, 1]."""
        return sigma_from_y(y)


def score_fixed(csp, pre, post, envs: BatchedEnv, actions: dict, *, seed: int, n_exec: int) -> tuple[int, int]:
    """(successes, episodes) of one fixed setting over one episode per env of ``envs``, started from
    seeds seed, seed+1, ... (the same initial states for every setting scored on the same envs)."""
    steering = Steering(csp, FixedHeads(actions), pre, post, AgentConfig(n_exec=n_exec), ObservationConfig())
    collector = make_collector(envs, steering, seed=seed, seeding="per_env")
    episodes = envs.num_envs
    return play_episodes(collector, torch.ones(episodes, dtype=torch.long)), episodes  # each env's first episode


def start_actor(kind: str, action_dim: int, *, init_std: float, init_sigma: float | None) -> HighLevelPolicy:
    """An untrained actor whose heads start where ``--rl.agent.init_std`` / ``init_sigma`` put them
    (TMRL: z and y; DSRL: z). Only its :meth:`~HighLevelPolicy.prior` is played, so its trunk's width
    (``obs_dim``) is a placeholder."""
    heads = ("z", "y") if kind == "tmrl" else ("z",)
    sigma = init_sigma if kind == "tmrl" else None
    config = HighLevelConfig(
        obs_dim=1, action_dim=action_dim, embed_dim=1, heads=heads, init_std=init_std, init_sigma=sigma
    )
    return HighLevelPolicy(config)


def score_start(
    csp, pre, post, envs: BatchedEnv, actor, per_env: torch.Tensor, *, seed: int, n_exec: int, exploration: str
) -> int:
    """Successes of ``actor``'s start (its heads drawn as ``warmup_heads="prior"`` draws them, the noise
    held per episode or fresh per decision as ``exploration`` says) over ``per_env[i]`` episodes of env
    i, from the fixed initial states that ``seed`` gives (``seeding="per_env"``)."""
    steering = Steering(csp, actor, pre, post, AgentConfig(n_exec=n_exec), ObservationConfig())
    collector = make_collector(envs, steering, seed=seed, exploration=exploration, seeding="per_env")
    return play_episodes(collector, per_env, warmup="prior")


def random_settings(kind: str, count: int, action_dim: int, generator: torch.Generator) -> list[dict]:
    """``count`` settings: z uniform in [-1, 1]^A (the first is z = 0) and, for TMRL, y uniform in
    [-1, 1] (sigma uniform in [0, 1]); DSRL settings have no y (sigma 0, the plain policy)."""
    settings = []
    for k in range(count):
        z = torch.zeros(1, action_dim) if k == 0 else torch.rand(1, action_dim, generator=generator) * 2 - 1
        actions = {"z": z}
        if kind == "tmrl":
            actions["y"] = torch.rand(1, 1, generator=generator) * 2 - 1
        settings.append(actions)
    return settings


@torch.no_grad()
def trace_sigma(collector, episodes: int, *, deterministic: bool) -> list[dict]:
    """Play one episode per env of ``collector`` and record, per decision, sigma and the gripper
    joint (the state's last entry) before the decision."""
    collector.reset()
    records = [{"sigma": [], "gripper": [], "success": False, "length": None} for _ in range(episodes)]
    running = np.ones(episodes, dtype=bool)
    while running.any():
        gripper = collector.observation["observation.state"][:, -1].copy()
        t = collector.step(deterministic=deterministic)
        for i in np.flatnonzero(running):
            records[i]["sigma"].append(float(t.sigma[i]))
            records[i]["gripper"].append(float(gripper[i]))
            if t.episode_end[i]:
                records[i]["success"] = bool(t.success[i])
                records[i]["length"] = len(records[i]["sigma"])
                running[i] = False
    return records


def phases(record: dict, middle: float, opens_high: bool) -> dict[str, list[float]] | None:
    """One episode's sigma split around the grasp: ``reach`` (decisions before it), ``grasp`` (the
    decision whose chunk closed the gripper: the one before the first reading past ``middle``) and
    ``after``. None if the gripper never closed."""
    gripper = np.asarray(record["gripper"])
    closed = np.flatnonzero(gripper < middle if opens_high else gripper > middle)
    if closed.size == 0 or closed[0] == 0:
        return None
    t, sigma = int(closed[0]), list(record["sigma"])
    return {"reach": sigma[: t - 1], "grasp": [sigma[t - 1]], "after": sigma[t:]}


def summarise_sigma(records: list[dict], open_value: float, closed_value: float) -> dict:
    """Mean sigma over decisions with the gripper nearer open vs nearer closed, and, over the
    successful episodes, before / at / after the decision that closed the gripper."""
    middle = (open_value + closed_value) / 2
    opens_high = open_value > closed_value
    sigma = np.concatenate([r["sigma"] for r in records])
    gripper = np.concatenate([r["gripper"] for r in records])
    is_open = gripper > middle if opens_high else gripper < middle
    mean = lambda x: float(np.mean(x)) if len(x) else None  # noqa: E731
    split = [phases(r, middle, opens_high) for r in records if r["success"]]
    split = [p for p in split if p is not None]
    return {
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "decisions": int(sigma.size),
        "sigma_mean": mean(sigma),
        "sigma_mean_gripper_open": mean(sigma[is_open]),
        "sigma_mean_gripper_closed": mean(sigma[~is_open]),
        "decisions_gripper_closed": int((~is_open).sum()),
        **{f"successes_sigma_{k}": mean([v for p in split for v in p[k]]) for k in ("reach", "grasp", "after")},
    }
