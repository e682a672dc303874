"""How CSP tells the action expert sigma: a zero-at-zero projection of sinusoidal sigma features.

Added to the output of the action expert's time layer (where the flow time enters; see each
backend), so sigma conditions every action token the way the flow time does (TMRL paper, section
2: a second sinusoidal embedding next to the flow time's).
"""

from __future__ import annotations

import torch
from torch import nn

from tmrl_vla.sinusoidal import sinusoidal_features, sinusoidal_frequencies


class SigmaEmbedding(nn.Module):
    """(b,) sigma in [0, 1] -> (b, width): ``W (sin/cos features(sigma) - features(0))``.

    W starts at zero (the wrapped policy is unchanged before training), and subtracting the
    features at 0 keeps the output exactly zero at sigma = 0 however W is trained.
    """

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.zeros(width, dim))
        # Periods from 1/250 to 4 cover sigma's unit range at fine and coarse resolution.
        self.register_buffer("freqs", sinusoidal_frequencies(dim, 4e-3, 4.0), persistent=False)

    def features(self, sigma: torch.Tensor) -> torch.Tensor:
        return sinusoidal_features(sigma, self.freqs)

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        delta = self.features(sigma) - self.features(torch.zeros_like(sigma))
        return delta.to(self.weight.dtype) @ self.weight.T
