"""Several envs stepped together, with explicit per-env done flags (no auto-reset).

Gymnasium's vector envs auto-reset finished envs, which hides the final observation and makes
"one episode per env" evaluation awkward. Here a finished env stays finished until the next
:meth:`BatchedEnv.reset`; its slot keeps returning its last observation and its actions are
ignored. The envs run in this process: on a 2-core machine the policy already uses the cores, and
subprocess workers measured no faster for 64x64 rendering.

Chunks go through :meth:`BatchedEnv.start_chunk` and :meth:`BatchedEnv.end_chunk`, so that a robot
env (:class:`~tmrl_vla.robots.env.RobotEnv`) keeps its arm moving on the rest of the chunk while the
caller decides the next one, and the next chunk starts at its first action whose tick has not
passed. A simulated env waits for the caller (its world stops), so for it they change nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np


class BatchedEnv:
    def __init__(self, make_env: Callable[[], gym.Env], num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.envs = [make_env() for _ in range(num_envs)]
        self.done = np.ones(num_envs, dtype=bool)
        self.success = np.zeros(num_envs, dtype=bool)
        # whether a person drove env i's robot (info["intervention"]) since the caller last cleared it
        self.intervened = np.zeros(num_envs, dtype=bool)
        self._last: list[dict] = [{} for _ in range(num_envs)]
        self._rest: list[np.ndarray] | None = None  # each env's chunk after the actions stepped now

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    @property
    def task(self) -> str:
        return self.envs[0].task

    def reset(self, seeds: Sequence[int]) -> dict[str, np.ndarray]:
        if len(seeds) != self.num_envs:
            raise ValueError(f"need one seed per env ({self.num_envs}), got {len(seeds)}")
        self._last = [env.reset(seed=int(s))[0] for env, s in zip(self.envs, seeds, strict=True)]
        self.done[:] = False
        self.success[:] = False
        return self._stack()

    def reset_one(self, index: int, seed: int) -> dict[str, np.ndarray]:
        """Start a new episode in one env only (RL collection keeps the others running)."""
        self._last[index] = self.envs[index].reset(seed=int(seed))[0]
        self.done[index] = False
        self.success[index] = False
        return self._stack()

    def step(
        self, actions: np.ndarray, active: np.ndarray | None = None
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        """Step every unfinished env (of those ``active``, a bool mask, when given); the others keep
        their state. Returns stacked obs, rewards (n,) and the done mask (n,)."""
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have a leading dim of {self.num_envs}, got {actions.shape}")
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        for i, env in enumerate(self.envs):
            if self.done[i] or (active is not None and not active[i]):
                continue
            obs, reward, terminated, truncated, info = env.step(actions[i])
            self._last[i] = obs
            rewards[i] = reward
            self.success[i] |= bool(info.get("is_success", False))
            self.intervened[i] |= bool(info.get("intervention", False))
            self.done[i] = terminated or truncated
        return self._stack(), rewards, self.done.copy()

    def start_chunk(self, chunk: np.ndarray, n_exec: int) -> np.ndarray:
        """The actions to step now, ``(num_envs, min(n_exec, chunk_len), action_dim)``, from each env's
        chunk ``(num_envs, chunk_len, action_dim)``: a robot that bridged the decision with the last
        chunk's rest (ticks that passed while the chunk was computed) starts that many actions in."""
        chunk = np.asarray(chunk)
        n = min(n_exec, chunk.shape[1])
        bridged = [env.stop_bridging() if hasattr(env, "stop_bridging") else 0 for env in self.envs]
        starts = np.minimum(bridged, chunk.shape[1] - n)
        self._rest = [chunk[i, s + n :] for i, s in enumerate(starts)]
        return np.stack([chunk[i, s : s + n] for i, s in enumerate(starts)])

    def end_chunk(self) -> None:
        """Hand each robot still in its episode the rest of its chunk, to send while the caller decides."""
        for i, env in enumerate(self.envs):
            if self._rest is not None and not self.done[i] and hasattr(env, "plan"):
                env.plan(self._rest[i])
        self._rest = None

    def _stack(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self._last]) for k in self._last[0]}

    def close(self) -> None:
        for env in self.envs:
            env.close()
