"""Chunk-level replay: preallocated tensors of features (never raw images), saved atomically.

One row per decision: observation features, the head actions taken, the reward summed over the
executed steps, ``done`` (success only) and the *true* next observation features, also at a
time-out (the reference code stored the next episode's reset observation there; we do not). With
n-step returns (:mod:`tmrl_vla.rl.nstep`) the reward is the discounted sum over the decisions a row
spans and ``steps`` says how many (1 for one-step rows).
"""

from __future__ import annotations

from pathlib import Path

import torch

from tmrl_vla.state_io import load_state, save_state


class ReplayBuffer:
    def __init__(self, capacity: int, obs_dim: int, head_dims: dict[str, int]) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs = torch.zeros(capacity, obs_dim)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.actions = {h: torch.zeros(capacity, d) for h, d in head_dims.items()}
        self.reward = torch.zeros(capacity)
        self.done = torch.zeros(capacity)
        self.steps = torch.ones(capacity)
        self.size = 0
        self.ptr = 0
        self.total_added = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: torch.Tensor,
        actions: dict[str, torch.Tensor],
        reward: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
        steps: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of b transitions (wrapping around when full); ``steps`` defaults to 1 per row."""
        b = obs.shape[0]
        if set(actions) != set(self.actions):
            raise ValueError(f"actions must have heads {sorted(self.actions)}, got {sorted(actions)}")
        idx = (self.ptr + torch.arange(b)) % self.capacity
        self.obs[idx] = obs.detach().cpu().float()
        self.next_obs[idx] = next_obs.detach().cpu().float()
        for h, a in actions.items():
            self.actions[h][idx] = a.detach().cpu().float()
        self.reward[idx] = reward.detach().cpu().float()
        self.done[idx] = done.detach().cpu().float()
        self.steps[idx] = 1.0 if steps is None else steps.detach().cpu().float()
        self.ptr = int((self.ptr + b) % self.capacity)
        self.size = min(self.size + b, self.capacity)
        self.total_added += b

    def add_rows(self, rows: dict) -> None:
        """Add the rows an :class:`~tmrl_vla.rl.nstep.NStepReturns` emits (its ``env`` column is ignored)."""
        self.add(rows["obs"], rows["actions"], rows["reward"], rows["done"], rows["next_obs"], rows["steps"])

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        idx = torch.randint(0, self.size, (batch_size,), generator=generator)
        return {
            "obs": self.obs[idx],
            "next_obs": self.next_obs[idx],
            "reward": self.reward[idx],
            "done": self.done[idx],
            "steps": self.steps[idx],
            **{f"action/{h}": a[idx] for h, a in self.actions.items()},
        }

    def state_dict(self) -> dict:
        n = self.size
        return {
            "capacity": self.capacity,
            "obs": self.obs[:n].clone() if n < self.capacity else self.obs.clone(),
            "next_obs": self.next_obs[:n].clone() if n < self.capacity else self.next_obs.clone(),
            "actions": {h: (a[:n] if n < self.capacity else a).clone() for h, a in self.actions.items()},
            "reward": self.reward[:n].clone() if n < self.capacity else self.reward.clone(),
            "done": self.done[:n].clone() if n < self.capacity else self.done.clone(),
            "steps": self.steps[:n].clone() if n < self.capacity else self.steps.clone(),
            "size": self.size,
            "ptr": self.ptr,
            "total_added": self.total_added,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity or set(state["actions"]) != set(self.actions):
            raise ValueError("replay state does not match this buffer's capacity or heads")
        n = state["obs"].shape[0]
        self.obs[:n] = state["obs"]
        self.next_obs[:n] = state["next_obs"]
        for h in self.actions:
            self.actions[h][:n] = state["actions"][h]
        self.reward[:n] = state["reward"]
        self.done[:n] = state["done"]
        self.steps[:n] = state.get("steps", 1.0)  # 1.0: saved before n-step returns existed
        self.size, self.ptr, self.total_added = state["size"], state["ptr"], state["total_added"]

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash mid-write leaves the previous file intact."""
        save_state(self.state_dict(), path)

    def load(self, path: str | Path) -> None:
        self.load_state_dict(load_state(path))


class MixedReplay:
    """A share ``fraction`` of every batch from a second buffer, the rest from the main one; the main
    buffer alone while the second is empty. Two uses: a buffer of successful episodes' transitions
    sampled 50/50 (TMRL paper: "a separate success buffer sampled 50/50 helped on robots"), and
    demonstrations (RLPD: 50/50 from demonstrations and online data; :mod:`tmrl_vla.rl.demos`). Mixers
    nest: the main buffer may itself be a :class:`MixedReplay`."""

    def __init__(self, main, other: ReplayBuffer, fraction: float = 0.5) -> None:
        if not 0 < fraction < 1:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        self.main, self.other, self.fraction = main, other, fraction

    def __len__(self) -> int:
        return len(self.main)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        share = round(batch_size * self.fraction)
        if len(self.other) == 0 or share == 0 or share == batch_size:
            return self.main.sample(batch_size, generator)
        a = self.main.sample(batch_size - share, generator)
        b = self.other.sample(share, generator)
        return {k: torch.cat([a[k], b[k]]) for k in a}


class SuccessfulEpisodes:
    """Holds each env's replay rows until its episode ends; a successful episode's rows are copied
    into ``buffer`` (the success buffer of :class:`MixedReplay`, or the self-imitation data).

    Rows come from :class:`~tmrl_vla.rl.nstep.NStepReturns`, which emits every row of an ended
    episode at its end, so an episode is complete here when its end is seen. Open episodes are not
    checkpointed: after a resume the interrupted ones can no longer count.
    """

    def __init__(self, buffer: ReplayBuffer, num_envs: int) -> None:
        self.buffer = buffer
        self.open: list[list[dict]] = [[] for _ in range(num_envs)]
        self.taken_over: set[int] = set()  # envs whose current episode a person finished (not the agent's)

    def take_over(self, env: int) -> None:
        """A person took env's robot over: its current episode's success, if any, is not the agent's."""
        self.open[env].clear()
        self.taken_over.add(env)

    def observe(self, rows: dict | None, episode_end: torch.Tensor, success: torch.Tensor, env_index: torch.Tensor):
        """``rows``: the rows that left the n-step stage this decision (or None); the other arguments
        are the decision's per-env flags (b,) and env indices (b,)."""
        if rows is not None:
            for k, env in enumerate(rows["env"].tolist()):
                if env not in self.taken_over:
                    self.open[env].append({key: _row(value, k) for key, value in rows.items() if key != "env"})
        for row in torch.nonzero(episode_end).flatten().tolist():
            env = int(env_index[row])
            episode = self.open[env]
            if success[row] and episode and env not in self.taken_over:
                self.buffer.add_rows(_stack_rows(episode))
            episode.clear()
            self.taken_over.discard(env)


def _row(value, k: int):
    return {h: a[k] for h, a in value.items()} if isinstance(value, dict) else value[k]


def _stack_rows(rows: list[dict]) -> dict:
    return {
        key: (
            {h: torch.stack([r[key][h] for r in rows]) for h in rows[0][key]}
            if isinstance(rows[0][key], dict)
            else torch.stack([r[key] for r in rows])
        )
        for key in rows[0]
    }
