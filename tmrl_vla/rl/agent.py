"""``SACAgent``: the high-level actor, the critic ensemble and its target, and their updates.

One call of :meth:`SACAgent.update` does ``utd`` critic updates (each followed by a Polyak step of
the target ensemble) and then one actor-and-temperatures update, the update-to-data schedule the
TMRL paper uses for VLAs (20 critic updates per actor update). The maths lives in
:mod:`tmrl_vla.rl.sac`; this class only wires modules, optimisers and batches together.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tmrl_vla.rl.actor import HighLevelPolicy
from tmrl_vla.rl.critic import CriticEnsemble
from tmrl_vla.rl.replay import ReplayBuffer
from tmrl_vla.rl.sac import actor_loss, critic_loss, polyak_update, td_target, temperature_loss


@dataclass(frozen=True)
class SACConfig:
    gamma: float = 0.99  # per decision (one action chunk)
    tau: float = 0.005
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    batch_size: int = 256
    utd: int = 20  # critic updates per actor update
    # Whether -alpha log pi(a'|s') enters the TD target. The reference TMRL code computes it and
    # drops it; we follow it by default (not yet measured on the pick task).
    entropy_backup: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.gamma <= 1 or not 0 < self.tau <= 1:
            raise ValueError("gamma and tau must lie in (0, 1]")
        if self.utd < 1 or self.batch_size < 1:
            raise ValueError("utd and batch_size must be >= 1")


def _head_actions(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.split("/", 1)[1]: v for k, v in batch.items() if k.startswith("action/")}


class SACAgent(nn.Module):
    def __init__(self, actor: HighLevelPolicy, critics: CriticEnsemble, config: SACConfig | None = None) -> None:
        super().__init__()
        if set(actor.config.heads) != set(critics.config.heads):
            raise ValueError(f"actor heads {actor.config.heads} and critic heads {critics.config.heads} differ")
        self.config = config or SACConfig()
        self.actor = actor
        self.critics = critics
        self.target_critics = copy.deepcopy(critics).requires_grad_(False)
        self.actor_opt = torch.optim.Adam(actor.actor_parameters(), lr=self.config.actor_lr)
        self.critic_opt = torch.optim.Adam(critics.parameters(), lr=self.config.critic_lr)
        self.temperature_opt = torch.optim.Adam(actor.log_alpha.parameters(), lr=self.config.temperature_lr)

    def update_critics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            next_actions, next_logp = self.actor.sample(batch["next_obs"])
            next_q = self.target_critics(batch["next_obs"], next_actions)
            alphas = self.actor.alphas()
            backup_logp = None
            if cfg.entropy_backup:  # one alpha per head, so the bonus is a per-head sum
                backup_logp = sum(alphas[h] * lp for h, lp in next_logp.items())
            target = td_target(batch["reward"], batch["done"], next_q, cfg.gamma, next_log_prob=backup_logp, alpha=1.0)
        q = self.critics(batch["obs"], _head_actions(batch))
        loss = critic_loss(q, target)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()
        polyak_update(self.target_critics, self.critics, cfg.tau)
        return {
            "critic/loss": loss.item(),
            "critic/q_mean": q.mean().item(),
            "critic/target_mean": target.mean().item(),
        }

    def update_actor(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        actions, log_probs = self.actor.sample(batch["obs"])
        q = self.critics(batch["obs"], actions)
        loss = actor_loss(q, log_probs, self.actor.alphas())
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)  # critic grads from this pass are discarded
        loss.backward()
        self.actor_opt.step()
        t_loss = sum(
            temperature_loss(self.actor.log_alpha[h], lp, self.actor.config.target(h)) for h, lp in log_probs.items()
        )
        self.temperature_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        self.temperature_opt.step()
        metrics = {"actor/loss": loss.item()}
        for h, lp in log_probs.items():
            metrics[f"actor/entropy_{h}"] = -lp.mean().item()
            metrics[f"actor/alpha_{h}"] = self.actor.log_alpha[h].exp().item()
        return metrics

    def update(self, replay: ReplayBuffer, generator: torch.Generator | None = None) -> dict[str, float]:
        """``utd`` critic updates, then one actor and temperature update; returns the last metrics."""
        metrics: dict[str, float] = {}
        for _ in range(self.config.utd):
            metrics |= self.update_critics(replay.sample(self.config.batch_size, generator))
        metrics |= self.update_actor(replay.sample(self.config.batch_size, generator))
        for name, value in metrics.items():
            if not torch.isfinite(torch.tensor(value)):
                raise FloatingPointError(f"{name} is {value}: stopping instead of training on NaN")
        return metrics
