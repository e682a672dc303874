"""Chunk-level experience from batched envs: one transition per env per decision.

Rules (TMRL paper, section 3, and the reference code's known bug, fixed):

* the first ``n_exec`` actions of each sampled chunk run; the reward is summed over the steps that
  actually ran (an env that finishes mid-chunk stops there);
* ``done`` is 1 only on success; a time-out is not terminal, so its value bootstraps;
* the stored next observation is the env's *true* last observation, also at a time-out; only then is
  the env reset (the reference buffer stored the next episode's reset observation instead);
* exploration is per decision (fresh noise for every head at every decision) or per episode
  (``exploration="episode"``: each env draws its heads' standard-normal noise when its episode
  starts and keeps it until the episode ends; the policy's mean still follows the state). Why: on
  the pick task, a fixed (z, sigma) held for a whole episode can succeed far more often than the
  same values mixed with others from one chunk to the next, so i.i.d. noise rarely shows the critic
  what a good choice does; noise held per episode does (measured: see the README);
* every observation is encoded once: the next observation's prefix and features are kept and reused
  by the following decision; after a decision in which some env finished (and was reset), the
  whole batch is encoded afresh once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.rl.decision import decide, encode
from tmrl_vla.rl.encoder import ObservationEncoder
from tmrl_vla.rollout import obs_to_batch


@dataclass
class Transitions:
    obs: torch.Tensor  # (b, obs_dim)
    actions: dict[str, torch.Tensor]
    reward: torch.Tensor  # (b,)
    done: torch.Tensor  # (b,) 1 on success only
    next_obs: torch.Tensor  # (b, obs_dim), the true next observation
    episode_end: torch.Tensor  # (b,) bool: success or time-out (the env was reset afterwards)
    success: torch.Tensor  # (b,) bool
    sigma: torch.Tensor  # (b,)


class DecisionCollector:
    def __init__(
        self,
        envs: BatchedEnv,
        csp,
        actor,
        preprocessor,
        postprocessor,
        *,
        n_exec: int = 5,
        z_scale: float = 1.0,
        seed: int = 0,
        image_grid: int = 1,
        exploration: str = "decision",
        encoder: ObservationEncoder | None = None,
    ) -> None:
        if exploration not in ("decision", "episode"):
            raise ValueError(f"exploration must be 'decision' or 'episode', got {exploration!r}")
        self.envs, self.csp, self.actor = envs, csp, actor
        self.exploration = exploration
        self.held_noise: dict[str, torch.Tensor] | None = None  # (num_envs, dim) per head, per episode
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.n_exec, self.z_scale, self.image_grid = n_exec, z_scale, image_grid
        self.encoder = encoder  # a separate frozen ObservationEncoder, or None (the pooled VLA prefix)
        self.next_seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes_finished = 0
        self.successes = 0
        self._obs: dict[str, np.ndarray] | None = None
        self._encoded: tuple | None = None
        self.device = next(csp.parameters()).device

    def _seeds(self, n: int) -> list[int]:
        seeds = list(range(self.next_seed, self.next_seed + n))
        self.next_seed += n
        return seeds

    def _batch(self, obs: dict[str, np.ndarray]) -> dict:
        return self.preprocessor(obs_to_batch(obs, self.envs.task, self.device))

    @property
    def observation(self) -> dict[str, np.ndarray]:
        """The envs' current raw observation: the one the next decision acts on."""
        if self._obs is None:
            self.reset()
        return self._obs

    def reset(self) -> None:
        self._obs = self.envs.reset(self._seeds(self.envs.num_envs))
        self._encoded = None
        if self.exploration == "episode":
            self.held_noise = {h: self._draw(self.envs.num_envs, h) for h in self.actor.config.heads}

    def _draw(self, n: int, head: str) -> torch.Tensor:
        return torch.randn(n, self.actor.config.head_dim(head), generator=self.generator)

    def _renew_noise(self, index: int) -> None:
        """A new episode in env ``index`` gets new held exploration noise."""
        if self.held_noise is not None:
            for h, noise in self.held_noise.items():
                noise[index] = self._draw(1, h)[0]

    @torch.no_grad()
    def step(self, *, uniform: bool = False, deterministic: bool = False) -> Transitions:
        """One decision in every env; finished envs are reset for the next decision."""
        if self._obs is None:
            self.reset()
        batch = self._batch(self._obs)
        decision = decide(
            self.csp,
            self.actor,
            batch,
            z_scale=self.z_scale,
            uniform=uniform,
            deterministic=deterministic,
            generator=self.generator,
            encoded=self._encoded,
            image_grid=self.image_grid,
            noise=self.held_noise,
            encoder=self.encoder,
        )
        chunk = self.postprocessor(decision.chunk).cpu().numpy()  # (b, chunk, A) in joint units
        n = self.envs.num_envs
        reward = np.zeros(n, dtype=np.float32)
        for k in range(min(self.n_exec, chunk.shape[1])):
            active = ~self.envs.done
            obs, r, _ = self.envs.step(chunk[:, k])
            reward += r * active
            if self.envs.done.all():
                break
        success = self.envs.success.copy()
        ended = self.envs.done.copy()
        next_batch = self._batch(obs)
        # the true next observation, also at time-out
        next_cache, next_features = encode(self.csp, next_batch, self.image_grid, self.encoder)

        transitions = Transitions(
            obs=decision.features,
            actions=decision.actions,
            reward=torch.from_numpy(reward),
            done=torch.from_numpy(success.astype(np.float32)),
            next_obs=next_features,
            episode_end=torch.from_numpy(ended),
            success=torch.from_numpy(success),
            sigma=decision.sigma,
        )
        self.episodes_finished += int(ended.sum())
        self.successes += int(success.sum())
        if ended.any():
            for i in np.flatnonzero(ended):
                obs = self.envs.reset_one(int(i), self._seeds(1)[0])
                self._renew_noise(int(i))
            self._obs, self._encoded = obs, None  # reset envs changed: encode afresh next time
        else:
            self._obs, self._encoded = obs, (next_cache, next_features)
        return transitions


def play_episodes(collector: DecisionCollector, per_env: torch.Tensor, *, deterministic: bool = False) -> int:
    """Step ``collector`` (already reset) until env i has ended ``per_env[i]`` episodes; returns the
    successes among those episodes. Later episodes of envs that are done are played but not counted.

    A fixed share per env, rather than the first N endings over all envs: the first endings are
    biased towards short episodes, and on tasks where success ends an episode, those are successes.
    """
    played = torch.zeros_like(per_env)
    wins = 0
    while (played < per_env).any():
        t = collector.step(deterministic=deterministic)
        counted = t.episode_end & (played < per_env)
        wins += int((t.success & counted).sum())
        played += counted.long()
    return wins
