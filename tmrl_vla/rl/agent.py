"""``SACAgent``: the high-level actor, the critic ensemble and its target, and their updates.

One call of :meth:`SACAgent.update` does ``utd`` critic updates (each followed by a Polyak step of
the target ensemble) and then one actor-and-temperatures update, the update-to-data schedule the
TMRL paper uses for VLAs (20 critic updates per actor update). The maths lives in
:mod:`tmrl_vla.rl.sac`; this class only wires modules, optimisers and batches together.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy, sample_heads
from tmrl_vla.rl.config import AgentConfig, SACConfig
from tmrl_vla.rl.critic import CriticConfig, CriticEnsemble
from tmrl_vla.rl.distributed import sync_gradients
from tmrl_vla.rl.replay import MixedReplay, ReplayBuffer
from tmrl_vla.rl.sac import (
    actor_loss,
    anchor_loss,
    critic_loss,
    imitation_loss,
    polyak_update,
    td_target,
    temperature_loss,
)


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

    def set_observation_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Freeze the observation normalisation of the actor and both ensembles (see rl.normalize)."""
        for module in (self.actor, self.critics, self.target_critics):
            module.normalize.set_stats(mean, std)

    def update_critics(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        cfg = self.config
        with torch.no_grad():
            next_actions, next_logp = self.actor.sample(batch["next_obs"])
            next_q = self.target_critics(batch["next_obs"], next_actions)
            if cfg.target_subset is not None and cfg.target_subset < next_q.shape[0]:
                next_q = next_q[torch.randperm(next_q.shape[0])[: cfg.target_subset]]
            alphas = self.actor.alphas()
            backup_logp = None
            if cfg.entropy_backup:  # one alpha per head, so the bonus is a per-head sum
                backup_logp = sum(alphas[h] * lp for h, lp in next_logp.items())
            # an n-step row discounts its bootstrap by gamma ** (decisions it spans)
            gamma = cfg.gamma ** batch["steps"]
            reward = batch["reward"] * cfg.reward_scale  # the critics learn values in scaled units
            target = td_target(reward, batch["done"], next_q, gamma, next_log_prob=backup_logp, alpha=1.0)
        q = self.critics(batch["obs"], _head_actions(batch))
        loss = critic_loss(q, target)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_gradients(self.critics.parameters(), loss, "critic/loss")
        self.critic_opt.step()
        polyak_update(self.target_critics, self.critics, cfg.tau)
        return {
            "critic/loss": loss.item(),
            "critic/q_mean": q.mean().item(),
            "critic/target_mean": target.mean().item(),
        }

    def update_actor(
        self, batch: dict[str, torch.Tensor], imitation: dict[str, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """One actor step (plus ``imitation_weight`` x the NLL of the ``imitation`` batch's actions,
        when given, and ``anchor_weight`` x the KL to the actor's start), then one step of every
        head's temperature."""
        distribution = self.actor.distribution(batch["obs"])
        actions, log_probs = sample_heads(distribution)
        q = self.critics(batch["obs"], actions)
        loss = actor_loss(q, log_probs, self.actor.alphas())
        nll = None
        if imitation is not None and self.config.imitation_weight > 0:
            nll = imitation_loss(self.actor.log_prob(imitation["obs"], _head_actions(imitation)))
            loss = loss + self.config.imitation_weight * nll
        anchor = None
        if self.config.anchor_weight > 0:
            anchor = anchor_loss(self.actor.anchor_kl(distribution))
            loss = loss + self.config.anchor_weight * anchor
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)  # critic grads from this pass are discarded
        loss.backward()
        sync_gradients(self.actor.actor_parameters(), loss, "actor/loss")
        self.actor_opt.step()
        t_loss = sum(
            temperature_loss(self.actor.log_alpha[h], lp, self.actor.config.target(h)) for h, lp in log_probs.items()
        )
        self.temperature_opt.zero_grad(set_to_none=True)
        t_loss.backward()
        sync_gradients(self.actor.log_alpha.parameters(), t_loss, "temperature/loss")
        self.temperature_opt.step()
        metrics = {"actor/loss": loss.item()}
        if nll is not None:
            metrics["actor/imitation_nll"] = nll.item()
        if anchor is not None:
            metrics["actor/anchor_kl"] = anchor.item()
        for h, lp in log_probs.items():
            metrics[f"actor/entropy_{h}"] = -lp.mean().item()
            metrics[f"actor/alpha_{h}"] = self.actor.log_alpha[h].exp().item()
        return metrics

    def pretrain_critics(
        self, replay: ReplayBuffer | MixedReplay, updates: int, generator: torch.Generator | None = None
    ) -> dict[str, float]:
        """``updates`` critic updates and no actor update (``critic_pretrain_updates``); returns the
        first and last critic loss, so a log shows how far the critics came."""
        batches = (replay.sample(self.config.batch_size, generator) for _ in range(updates))
        losses = [self.update_critics(batch)["critic/loss"] for batch in batches]
        return {"critic/pretrain_loss_first": losses[0], "critic/pretrain_loss_last": losses[-1]}

    def update(
        self,
        replay: ReplayBuffer | MixedReplay,
        generator: torch.Generator | None = None,
        successes: ReplayBuffer | None = None,
    ) -> dict[str, float]:
        """``utd`` critic updates, then one actor and temperature update; returns the last metrics.

        ``successes``: transitions of successful episodes for the self-imitation term (used when
        ``imitation_weight`` > 0 and it is not empty).

        Gradients are averaged over processes before each step (:mod:`tmrl_vla.rl.distributed`). A
        non-finite loss or gradient raises :class:`~tmrl_vla.rl.distributed.NonFiniteLossError`
        *before* its optimiser step, so the weights and optimisers are still the last finite ones.
        """
        metrics: dict[str, float] = {}
        for _ in range(self.config.utd):
            metrics |= self.update_critics(replay.sample(self.config.batch_size, generator))
        imitation = None
        if self.config.imitation_weight > 0 and successes is not None and len(successes) > 0:
            imitation = successes.sample(self.config.batch_size, generator)
        metrics |= self.update_actor(replay.sample(self.config.batch_size, generator), imitation)
        return metrics


def build_agent(agent: AgentConfig, sac: SACConfig, *, obs_dim: int, action_dim: int, embed_dim: int) -> SACAgent:
    """A fresh actor and critic ensemble for ``agent``'s heads on observations of width ``obs_dim``."""
    widths = dict(obs_dim=obs_dim, action_dim=action_dim, embed_dim=embed_dim)
    shared = dict(widths, heads=agent.active_heads, hidden=agent.hidden)
    actor = HighLevelPolicy(
        HighLevelConfig(
            **shared,
            init_temperature=agent.init_temperature,
            target_entropy=dict(agent.target_entropy),
            init_sigma=agent.init_sigma if "y" in agent.active_heads else None,
            init_std=agent.init_std,
            sigma_centre=agent.sigma_centre,
            targets_from_start=sac.anchor_weight > 0,
        )
    )
    critics = CriticEnsemble(CriticConfig(**shared, num_critics=agent.num_critics))
    return SACAgent(actor, critics, sac)
