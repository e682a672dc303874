"""Running a chunking LeRobot policy in batched envs, and measuring its success rate.

A policy here is anything that maps a batch of env observations to action chunks
``(b, chunk, action_dim)``; :class:`LeRobotChunkPolicy` adapts a LeRobot policy with its pre- and
post-processors. The first ``n_exec`` actions of each chunk are executed, then the policy replans,
as LeRobot's ``select_action`` does with ``n_action_steps`` (doing it here keeps the loop the same
for the RL agents, which choose a new latent per chunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from tmrl_vla.envs.batched import BatchedEnv


class ChunkPolicy(Protocol):
    def __call__(self, obs: dict[str, np.ndarray], task: str) -> np.ndarray:
        """Observations stacked over envs -> action chunks (b, chunk, action_dim)."""
        ...


def obs_to_batch(obs: dict[str, np.ndarray], task: str, device: torch.device | str = "cpu") -> dict:
    """Env observations (numpy, HWC uint8 images) -> a LeRobot policy batch (CHW float in [0, 1])."""
    batch: dict = {}
    n = None
    for key, value in obs.items():
        t = torch.from_numpy(np.ascontiguousarray(value))
        if key.startswith("observation.images."):
            if t.ndim != 4 or t.shape[-1] != 3:
                raise ValueError(f"{key} must be (b, H, W, 3) uint8, got {tuple(t.shape)}")
            t = t.permute(0, 3, 1, 2).float().div_(255.0)
        else:
            t = t.float()
        batch[key] = t.to(device)
        n = t.shape[0]
    batch["task"] = [task] * (n or 0)
    return batch


class LeRobotChunkPolicy:
    """A LeRobot policy (or a :class:`~tmrl_vla.csp.policy.CSPPolicy`) with its processors, as a :class:`ChunkPolicy`.

    ``noise`` (b, chunk, max_action_dim) may be passed to fix the flow's initial noise; otherwise the
    policy draws it from the global torch RNG, as LeRobot does. ``predict_kwargs`` are passed to
    every ``predict_action_chunk`` call (e.g. ``sigma=0.75`` for a CSP policy).
    """

    def __init__(self, policy, preprocessor, postprocessor, **predict_kwargs) -> None:
        self.policy = policy
        self.preprocessor = preprocessor
        self.postprocessor = postprocessor
        self.predict_kwargs = predict_kwargs
        self.device = next(policy.parameters()).device
        self.lerobot_config = getattr(policy, "base_policy", policy).config
        self.chunk_size = self.lerobot_config.chunk_size
        self.n_action_steps = self.lerobot_config.n_action_steps

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], task: str, noise: torch.Tensor | None = None) -> np.ndarray:
        self.policy.eval()
        batch = self.preprocessor(obs_to_batch(obs, task, self.device))
        actions = self.policy.predict_action_chunk(batch, noise=noise, **self.predict_kwargs)  # (b, chunk, A)
        actions = self.postprocessor(actions)
        return actions.cpu().numpy()


@dataclass
class EvalResult:
    successes: list[bool]
    episode_steps: list[int]

    @property
    def n(self) -> int:
        return len(self.successes)

    @property
    def success_rate(self) -> float:
        return float(np.mean(self.successes)) if self.successes else float("nan")

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(int(np.sum(self.successes)), self.n)

    def summary(self) -> dict:
        lo, hi = self.ci95
        return {"success_rate": self.success_rate, "ci95": [lo, hi], "episodes": self.n}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval: well-behaved at rates of 0 and 1, unlike the normal approximation."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the interval touches 0 or 1 exactly; rounding would leave 1 - 1e-16.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return (lo, hi)


def evaluate(
    policy: ChunkPolicy,
    make_env: Callable[[], gym.Env],
    *,
    num_episodes: int,
    num_envs: int = 8,
    seed: int = 10_000,
    n_exec: int = 5,
    swap_images: bool = False,
    progress: bool = False,
    torch_seed: int | None = None,
) -> EvalResult:
    """Success rate over ``num_episodes`` episodes with env seeds ``seed, seed + 1, ...``.

    The global torch RNG is seeded with ``torch_seed`` (default: ``seed``), so the policy's sampling
    noise repeats; vary it to draw fresh rollouts from the same initial states.

    ``swap_images`` is the "does the policy read the image?" control: each env's images are
    replaced by those of the next env in the batch (another episode at the same time step), while
    its own proprioception is kept. A policy that relies on the image should collapse.
    """
    if swap_images and num_envs < 2:
        raise ValueError("swap_images needs num_envs >= 2")
    torch.manual_seed(seed if torch_seed is None else torch_seed)  # the policy's sampling noise repeats
    envs = BatchedEnv(make_env, num_envs)
    successes: list[bool] = []
    steps: list[int] = []
    seeds: Sequence[int] = range(seed, seed + num_episodes)

    bar = tqdm(total=num_episodes, desc="evaluating", unit="ep", disable=not progress)
    try:
        for start in range(0, num_episodes, num_envs):
            group = list(seeds[start : start + num_envs])
            group += [group[-1]] * (num_envs - len(group))  # pad the last group; extra results dropped
            obs = envs.reset(group)
            t = np.zeros(num_envs, dtype=int)
            while not envs.done.all():
                if swap_images:
                    obs = {
                        k: (np.roll(v, 1, axis=0) if k.startswith("observation.images.") else v) for k, v in obs.items()
                    }
                chunk = envs.start_chunk(policy(obs, envs.task), n_exec)
                for k in range(chunk.shape[1]):
                    active = ~envs.done
                    obs, _, _ = envs.step(chunk[:, k])
                    t += active
                    if envs.done.all():
                        break
                envs.end_chunk()
            keep = min(num_envs, num_episodes - start)
            successes += envs.success[:keep].tolist()
            steps += t[:keep].tolist()
            bar.update(keep)
    finally:
        bar.close()
        envs.close()
    return EvalResult(successes=successes, episode_steps=steps)
