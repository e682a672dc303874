"""n-step returns over chunk decisions, per env, before transitions reach the replay.

Why: the pick task pays one reward, at the success that ends an episode of ~20 decisions. With
one-step targets that reward climbs back one decision per round of target-critic updates (Polyak tau
0.005: about 200 critic updates per round), so the early decisions of an episode, where reaching is
decided, only see it after thousands of updates. An n-step target carries it back n decisions per
round (Sutton and Barto, ch. 7; as in D4PG and Rainbow). The price is a bias towards the behaviour
policy's returns, small while the policy changes slowly; ``n_step = 1`` is plain SAC.

A row leaves for the replay once n later decisions are known, or when its episode ends: then every
pending row of that env leaves with the rest of the episode's discounted rewards, ``done`` of the
episode's end (success only) and the true last observation. ``steps`` is the number of decisions the
row spans, so the target discounts its bootstrap by gamma ** steps.
"""

from __future__ import annotations

import torch

from tmrl_vla.rl.collector import Transitions


class NStepReturns:
    def __init__(self, num_envs: int, n: int, gamma: float) -> None:
        if n < 1:
            raise ValueError(f"n_step must be >= 1, got {n}")
        self.n, self.gamma = n, gamma
        # per env: rows (obs, actions, reward) of decisions whose n-step target is not complete yet
        self.pending: list[list[tuple]] = [[] for _ in range(num_envs)]
        self.last_next_obs: list[torch.Tensor | None] = [None] * num_envs

    def push(self, t: Transitions) -> dict[str, torch.Tensor] | None:
        """Add one decision of the envs in ``t.env_index``; returns the rows now complete (with an
        ``env`` column), or None."""
        out: list[tuple] = []
        for row, i in enumerate(t.env_index.tolist()):
            rows = self.pending[i]
            rows.append((t.obs[row], {h: a[row] for h, a in t.actions.items()}, float(t.reward[row])))
            self.last_next_obs[i] = t.next_obs[row]
            if bool(t.episode_end[row]):
                out += self._emit(i, len(rows), float(t.done[row]))
            elif len(rows) == self.n:
                out += self._emit(i, 1, 0.0)
        return self._stack(out)

    def cut(self, i: int) -> dict[str, torch.Tensor] | None:
        """Every pending row of env i, bootstrapped from its last observation (done 0): its episode
        goes on, but not as the agent's (a person took the robot over), so no later reward is its."""
        return self._stack(self._emit(i, len(self.pending[i]), 0.0))

    def flush(self) -> dict[str, torch.Tensor] | None:
        """Every pending row, bootstrapped from the last observation reached (its episode goes no further:
        e.g. the run resumes with fresh episodes)."""
        out: list[tuple] = []
        for i, rows in enumerate(self.pending):
            out += self._emit(i, len(rows), 0.0)
        return self._stack(out)

    def _emit(self, i: int, count: int, done: float) -> list[tuple]:
        """The first ``count`` pending rows of env i, each with its return up to the latest decision."""
        rows = self.pending[i]
        rewards = [r for _, _, r in rows]
        out = []
        for j in range(count):
            ret = sum(self.gamma**k * r for k, r in enumerate(rewards[j:]))
            out.append((i, rows[j][0], rows[j][1], ret, done, self.last_next_obs[i], len(rows) - j))
        del rows[:count]
        return out

    @staticmethod
    def _stack(out: list[tuple]) -> dict[str, torch.Tensor] | None:
        if not out:
            return None
        env, obs, actions, ret, done, next_obs, steps = zip(*out, strict=True)
        return {
            "env": torch.tensor(env),
            "obs": torch.stack(obs),
            "actions": {h: torch.stack([a[h] for a in actions]) for h in actions[0]},
            "reward": torch.tensor(ret, dtype=torch.float32),
            "done": torch.tensor(done, dtype=torch.float32),
            "next_obs": torch.stack(next_obs),
            "steps": torch.tensor(steps, dtype=torch.float32),
        }

    def state_dict(self) -> dict:
        return {"pending": self.pending, "last_next_obs": self.last_next_obs}

    def load_state_dict(self, state: dict) -> None:
        if len(state["pending"]) != len(self.pending):
            raise ValueError(f"n-step state has {len(state['pending'])} envs, this run has {len(self.pending)}")
        self.pending, self.last_next_obs = state["pending"], state["last_next_obs"]
