"""Sinusoidal features of a scalar in [0, 1] (sigma), shared by the CSP sigma embedding and the critics.

Both turn sigma into ``[sin(2 pi sigma / p), cos(2 pi sigma / p)]`` over log-spaced periods ``p``:
short periods resolve small changes of sigma, long ones (longer than the unit range) keep a
monotone, coarse reading. Each caller picks its period range once and keeps the frequencies.
"""

from __future__ import annotations

import math

import torch


def sinusoidal_frequencies(dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """``dim // 2`` angular frequencies ``2 pi / p`` for periods log-spaced from ``min_period`` to ``max_period``."""
    if dim < 2 or dim % 2:
        raise ValueError(f"the number of sinusoidal features must be an even number >= 2, got {dim}")
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), dim // 2)
    return 2 * math.pi / periods


def sinusoidal_features(x: torch.Tensor, frequencies: torch.Tensor) -> torch.Tensor:
    """(b,) -> (b, 2 * len(frequencies)): the sines, then the cosines, of ``x * frequency``."""
    angles = x.float()[:, None] * frequencies.to(x.device)[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)
