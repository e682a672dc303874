"""Observation normalisation for the high-level policy and the critics.

Why: the RL observation is pooled VLA embeddings plus proprioception, and their scales differ
wildly. On the pick task the mean language token is the same at every decision (standard deviation
0) with entries up to 15, while the image features vary by ~0.5 and z lies in [-1, 1]: unnormalised,
a constant block dominates each network's first layer and the head actions barely move the critic's
hidden features. Statistics are set once, from the warm-up data (all processes pooled), and then
frozen, so the stored features never change meaning during a run; they travel with the weights.
Constant dimensions become 0 (their spread is floored), and values are clipped to +-``clip``.
"""

from __future__ import annotations

import torch
from torch import nn


class ObservationNormalizer(nn.Module):
    def __init__(self, dim: int, *, min_std: float = 1e-2, clip: float = 10.0) -> None:
        super().__init__()
        self.min_std, self.clip = min_std, clip
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.register_buffer("ready", torch.tensor(False))  # False: pass observations through unchanged

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.ready:
            return obs
        return ((obs - self.mean) / self.std).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        if mean.shape != self.mean.shape or std.shape != self.std.shape:
            raise ValueError(f"statistics must have shape {tuple(self.mean.shape)}, got {tuple(mean.shape)}")
        self.mean.copy_(mean)
        self.std.copy_(std.clamp_min(self.min_std))
        self.ready.fill_(True)


def moments(obs: torch.Tensor) -> torch.Tensor:
    """[count, sum (d), sum of squares (d)] flattened, in float64 (a difference of large sums follows):
    what processes add up before :func:`mean_std`."""
    obs = obs.double()
    return torch.cat([torch.tensor([float(obs.shape[0])], dtype=torch.float64), obs.sum(0), (obs**2).sum(0)])


def mean_std(summed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and (population) standard deviation from summed :func:`moments`."""
    summed = summed.double()
    d = (summed.numel() - 1) // 2
    n = summed[0].clamp_min(1.0)
    mean = summed[1 : 1 + d] / n
    var = (summed[1 + d :] / n - mean**2).clamp_min(0.0)
    return mean.float(), var.sqrt().float()
