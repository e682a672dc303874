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
  whole batch is encoded afresh once;
* an env can be *retired*: told to stop after its current episode (``retire_after_episode``), it is
  not reset when that episode ends and takes no further part in decisions, so evaluation spends no
  policy or simulator time on episodes it would not count. Transitions then cover only the envs
  that took part (``env_index``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.rl.decision import decide
from tmrl_vla.rl.encoder import ObservationEncoder
from tmrl_vla.rl.observation import encode
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
    env_index: torch.Tensor  # (b,) which env each row came from (all envs unless some are retired)
    # (b,) a person drove the robot during the decision (a teleoperator's intervention): the chunk
    # that ran was not the one this decision's latent chose
    intervened: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> Transitions:
        """The rows where ``keep`` (b,) is true."""
        return Transitions(
            **{
                f.name: (
                    {h: a[keep] for h, a in value.items()}
                    if isinstance(value, dict)
                    else value[keep]
                    if value is not None
                    else None
                )
                for f in dataclasses.fields(self)
                for value in [getattr(self, f.name)]
            }
        )


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
        seeding: str = "stream",
    ) -> None:
        """``seeding``: ``"stream"`` gives each new episode the next seed in order of starting (training);
        ``"per_env"`` gives env i's k-th episode the seed ``seed + k * num_envs + i``, so the initial
        states depend only on the seed and each env's number of episodes, never on how long the
        episodes lasted: every policy evaluated this way meets the same states (a paired comparison)."""
        if exploration not in ("decision", "episode"):
            raise ValueError(f"exploration must be 'decision' or 'episode', got {exploration!r}")
        if seeding not in ("stream", "per_env"):
            raise ValueError(f"seeding must be 'stream' or 'per_env', got {seeding!r}")
        self.envs, self.csp, self.actor = envs, csp, actor
        self.exploration = exploration
        self.held_noise: dict[str, torch.Tensor] | None = None  # (num_envs, dim) per head, per episode
        self.preprocessor, self.postprocessor = preprocessor, postprocessor
        self.n_exec, self.z_scale, self.image_grid = n_exec, z_scale, image_grid
        self.encoder = encoder  # a separate frozen ObservationEncoder, or None (the pooled VLA prefix)
        self.seeding, self.seed = seeding, seed
        self.next_seed = seed
        self.episodes_started = np.zeros(envs.num_envs, dtype=np.int64)  # per env, for per_env seeding
        self.retire_after_episode = np.zeros(envs.num_envs, dtype=bool)  # set by the caller
        self.retired = np.zeros(envs.num_envs, dtype=bool)
        self.generator = torch.Generator().manual_seed(seed)
        self.episodes_finished = 0
        self.successes = 0
        self._obs: dict[str, np.ndarray] | None = None
        self._encoded: tuple | None = None  # (prefix cache, features, the env rows they cover)
        self.device = next(csp.parameters()).device

    def _seeds(self, indices) -> list[int]:
        """Seeds for new episodes in the envs ``indices`` (see ``seeding``)."""
        n = self.envs.num_envs
        if self.seeding == "per_env":
            seeds = [self.seed + int(self.episodes_started[i]) * n + int(i) for i in indices]
        else:
            seeds = list(range(self.next_seed, self.next_seed + len(indices)))
            self.next_seed += len(indices)
        self.episodes_started[list(indices)] += 1
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
        self.episodes_started[:] = 0
        self.retired[:] = False
        self._obs = self.envs.reset(self._seeds(range(self.envs.num_envs)))
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
    def step(self, *, warmup: str | None = None, deterministic: bool = False) -> Transitions:
        """One decision in every env that is not retired; finished envs are reset for the next
        decision, unless they were to retire after that episode. ``warmup``: draw the heads as
        ``rl.decision.WARMUP_HEADS[warmup]`` does instead of from the actor."""
        if self._obs is None:
            self.reset()
        rows = np.flatnonzero(~self.retired)
        if len(rows) == 0:
            raise RuntimeError("every env is retired: reset() the collector before stepping it again")
        held = None if self.held_noise is None else {h: v[rows] for h, v in self.held_noise.items()}
        decision = decide(
            self.csp,
            self.actor,
            self._batch(self._take(self._obs, rows)),
            z_scale=self.z_scale,
            warmup=warmup,
            deterministic=deterministic,
            generator=self.generator,
            # the previous decision's next observation, if it covers exactly the envs deciding now
            encoded=self._encoded[:2] if self._encoded is not None and np.array_equal(self._encoded[2], rows) else None,
            image_grid=self.image_grid,
            noise=held,
            encoder=self.encoder,
        )
        self.envs.intervened[rows] = False
        obs, reward = self._execute(decision.chunk, rows)
        success, ended = self.envs.success[rows], self.envs.done[rows]
        # the true next observation, also at time-out
        next_cache, next_features = encode(self.csp, self._batch(self._take(obs, rows)), self.image_grid, self.encoder)
        transitions = Transitions(
            obs=decision.features,
            actions=decision.actions,
            reward=torch.from_numpy(reward[rows]),
            done=torch.from_numpy(success.astype(np.float32)),
            next_obs=next_features,
            episode_end=torch.from_numpy(ended),
            success=torch.from_numpy(success),
            sigma=decision.sigma,
            env_index=torch.from_numpy(rows),
            intervened=torch.from_numpy(self.envs.intervened[rows].copy()),
        )
        self.episodes_finished += int(ended.sum())
        self.successes += int(success.sum())
        if ended.any():
            self._start_next_episodes(rows[ended], obs)
        else:
            self._obs, self._encoded = obs, (next_cache, next_features, rows)
        return transitions

    def _take(self, obs: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
        """The observation rows of the envs in ``rows`` (all of them: the arrays as they are)."""
        return {k: v[rows] for k, v in obs.items()} if len(rows) < self.envs.num_envs else obs

    def _execute(self, chunk: torch.Tensor, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Run the first ``n_exec`` actions of each env's chunk; returns the observation and the
        reward summed over the steps each env ran (an env that ends mid-chunk stops there)."""
        n = self.envs.num_envs
        chunk = self.postprocessor(chunk).cpu().numpy()  # (rows, chunk, A) in joint units
        actions = np.zeros((n, *chunk.shape[1:]), dtype=chunk.dtype)  # retired envs: not stepped
        actions[rows] = chunk
        actions = self.envs.start_chunk(actions, self.n_exec)
        active = ~self.retired
        reward = np.zeros(n, dtype=np.float32)
        for k in range(actions.shape[1]):
            obs, r, _ = self.envs.step(actions[:, k], active=active)
            reward += r
            if self.envs.done[rows].all():
                break
        self.envs.end_chunk()  # a robot runs the chunk's rest while the next decision is made
        return obs, reward

    def _start_next_episodes(self, finished: np.ndarray, obs: dict[str, np.ndarray]) -> None:
        """Reset the finished envs (or retire those told to), with new held noise."""
        retiring = finished[self.retire_after_episode[finished]]
        self.retired[retiring] = True
        for i in finished[~self.retire_after_episode[finished]]:
            obs = self.envs.reset_one(int(i), self._seeds([i])[0])
            self._renew_noise(int(i))
        self._obs, self._encoded = obs, None  # reset or retired envs changed the batch: encode afresh
