"""SAC's maths as small pure functions (Haarnoja et al. 2018; TMRL paper, section 3).

Decisions are action chunks: gamma is per decision and the reward is summed over the executed
steps. ``done`` is 1 only on success; time-outs bootstrap. Whether the entropy bonus enters the
backup is a choice (``entropy_backup``): the reference TMRL code computes it and then drops it.
"""

from __future__ import annotations

import torch
from torch import nn


def td_target(
    reward: torch.Tensor,
    done: torch.Tensor,
    next_q: torch.Tensor,
    gamma: float | torch.Tensor,
    *,
    next_log_prob: torch.Tensor | None = None,
    alpha: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """r + (1 - done) * gamma * (min over the target ensemble - alpha * log pi), shape (b,).

    next_q: (N, b) from the target critics at (s', a' ~ pi(s')); gamma: a float, or (b,) per row
    (gamma ** n for n-step rows). Pass ``next_log_prob`` (b,) to put
    the entropy bonus in the backup; leave it None to back up the plain min-Q.
    """
    soft = next_q.min(dim=0).values
    if next_log_prob is not None:
        soft = soft - alpha * next_log_prob
    return reward + (1.0 - done.float()) * gamma * soft


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over critics of the squared TD error; q (N, b), target (b,) (no gradient through it)."""
    return ((q - target.detach()[None, :]) ** 2).mean(dim=1).sum() / q.shape[0]


def actor_loss(q: torch.Tensor, log_probs: dict[str, torch.Tensor], alphas: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[sum_h alpha_h log pi_h - mean_N Q]; temperatures are constants here."""
    entropy_cost = sum(alphas[h].detach() * lp for h, lp in log_probs.items())
    return (entropy_cost - q.mean(dim=0)).mean()


def imitation_loss(log_probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Negative log-likelihood of replayed actions, summed over heads, mean over the batch.

    Used on the agent's own successful episodes (self-imitation, in the spirit of Oh et al. 2018):
    with 0/1 episode rewards a success is the only unambiguous signal, and cloning it moves the
    actor's mean and shrinks its spread without waiting for the critic to rank the actions.
    """
    return -sum(log_probs.values()).mean()


def gaussian_kl(mean: torch.Tensor, log_std: torch.Tensor, mean0: torch.Tensor, log_std0: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, std) || N(mean0, std0)) of diagonal Gaussians, summed over the last dim."""
    var_ratio = (2.0 * (log_std - log_std0)).exp()
    return 0.5 * (var_ratio + ((mean - mean0) / log_std0.exp()) ** 2 - 1.0).sum(-1) - (log_std - log_std0).sum(-1)


def anchor_loss(kl: dict[str, torch.Tensor]) -> torch.Tensor:
    """KL from the actor to its start, summed over heads, mean over the batch.

    SAC's entropy bonus alone pulls an actor that its critics do not yet inform towards the widest
    spread its heads allow (uniform z, sigma at the centre of its map), away from the base policy
    it steers; when the base already half-solves the task, those episodes cost successes. A KL to
    the start (z spread by ``init_std``, sigma low by ``init_sigma``) keeps
    the actor there until the critics pay for leaving (the KL-regularised RL of, e.g., Jaques et
    al. 2019, here towards the start of the noise-space policy rather than a language model).
    Adam's steps do not shrink with the temperature, so without the anchor even a small entropy bonus
    widens a narrow start within tens of updates when the critics are flat (tests/rl/test_agent.py).
    A wide start is itself far from a good base (z held per episode at ``init_std`` 1.0 keeps 0.34
    of a 0.98 base, at 0.22 it keeps 0.89: eval/results/agent_start.md).
    """
    return sum(kl.values()).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """Moves alpha up when the head's entropy (-log pi) is below its target, down when above."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def polyak_update(target: nn.Module, online: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau online, parameter by parameter."""
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.lerp_(o, tau)
