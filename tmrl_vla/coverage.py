"""Action coverage, "Success@K" (TMRL paper, section 4): how often a frozen policy *can* succeed.

Over N fixed initial states, roll the policy out K times from each with fresh sampling noise;
Success@K is the fraction of states with at least one success among the first K rollouts. A BC
policy that is confidently wrong in a shifted context stays flat in K; a policy whose samples cover
the right actions rises with K, which is what RL needs to find reward at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from tmrl_vla.rollout import ChunkPolicy, evaluate, wilson_interval


@dataclass
class CoverageResult:
    successes: np.ndarray  # (K, N) bool: rollout k from initial state n succeeded

    @property
    def success_at_k(self) -> np.ndarray:
        """(K,) Success@k for k = 1 .. K."""
        return np.logical_or.accumulate(self.successes, axis=0).mean(axis=1)

    @property
    def per_rollout_success(self) -> float:
        return float(self.successes.mean())

    def summary(self) -> dict:
        k, n = self.successes.shape
        hits = int(np.logical_or.reduce(self.successes, axis=0).sum())
        return {
            "success_at_k": self.success_at_k.round(4).tolist(),
            f"success_at_{k}": float(self.success_at_k[-1]),
            f"success_at_{k}_ci95": list(wilson_interval(hits, n)),
            "per_rollout_success": self.per_rollout_success,
            "states": n,
            "rollouts_per_state": k,
        }


def success_at_k(
    policy: ChunkPolicy,
    make_env: Callable[[], gym.Env],
    *,
    num_states: int,
    k: int,
    num_envs: int = 10,
    seed: int = 200_000,
    n_exec: int = 5,
) -> CoverageResult:
    """Roll out ``policy`` K times from each of ``num_states`` initial states (env seeds ``seed + i``)."""
    rows = []
    for r in range(k):
        res = evaluate(
            policy,
            make_env,
            num_episodes=num_states,
            num_envs=num_envs,
            seed=seed,
            n_exec=n_exec,
            torch_seed=seed + 7919 * (r + 1),
        )
        rows.append(res.successes)
    return CoverageResult(successes=np.array(rows, dtype=bool))
