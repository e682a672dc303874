"""``CriticEnsemble``: N Q-networks (Linear-LayerNorm-Mish) evaluated as one batched computation.

The N critics' weights are stacked, so every layer is one batched matmul over (N, B, width) instead
of N small ones: with the small networks TMRL uses (hidden 256-1024, N = 5-10) and 20 critic
updates per decision, the per-critic Python loop and kernel launches dominate otherwise
(``eval/bench_critic.py`` measures the difference).

Input: observation features, z, a sinusoidal embedding of the y head's position in [0, 1] (sigma
itself unless ``sigma_centre`` bends the map), and eps_c passed through a small
learned projection. Why a projection for eps_c: it is as wide as the VLA's embedding (960 for SmolVLA
base) and would otherwise swamp the ~100 observation and action features in the first layer; one
linear map to ``eps_c_proj`` features (64 by default) keeps the input balanced and is shared by all
critics. Heads that are off (DSRL: only z) contribute nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tmrl_vla.rl.actor import y_position
from tmrl_vla.rl.normalize import ObservationNormalizer
from tmrl_vla.sinusoidal import sinusoidal_features, sinusoidal_frequencies


@dataclass(frozen=True)
class CriticConfig:
    obs_dim: int
    action_dim: int
    embed_dim: int
    heads: tuple[str, ...] = ("z", "y", "eps_c")
    num_critics: int = 5
    hidden: int = 256
    num_layers: int = 2
    sigma_features: int = 16  # sinusoidal features of sigma
    eps_c_proj: int = 64  # 0 feeds eps_c raw
    # Every critic's output layer starts at zero, so every Q starts at 0, the value of a task whose
    # rewards are 0 until a success. With the usual random init each critic starts at about +-0.3,
    # and the min over target critics turns that spread into a pessimistic bias that the bootstrap
    # feeds back: offline on a 2400-transition pick-task replay (5 successes), Q over the data sat at
    # -0.18 after 2000 updates and successful transitions only reached 0.55, vs -0.03 and 0.72
    # after 1000 updates with zero init. The critics still differ through their hidden layers.
    zero_init_output: bool = True

    def __post_init__(self) -> None:
        if self.num_critics < 1 or self.num_layers < 1:
            raise ValueError("num_critics and num_layers must be >= 1")

    @property
    def input_dim(self) -> int:
        d = self.obs_dim
        if "z" in self.heads:
            d += self.action_dim
        if "y" in self.heads:
            d += self.sigma_features
        if "eps_c" in self.heads:
            d += self.eps_c_proj or self.embed_dim
        return d


class CriticEnsemble(nn.Module):
    def __init__(self, config: CriticConfig) -> None:
        super().__init__()
        self.config = config
        n = config.num_critics
        sizes = [config.input_dim] + [config.hidden] * config.num_layers + [1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.ln_gain = nn.ParameterList()
        self.ln_bias = nn.ParameterList()
        for i in range(len(sizes) - 1):
            w = torch.empty(n, sizes[i], sizes[i + 1])
            for k in range(n):  # each critic initialised like an nn.Linear of its own
                nn.init.kaiming_uniform_(w[k].T, a=math.sqrt(5))
            bound = 1 / math.sqrt(sizes[i])
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(torch.empty(n, 1, sizes[i + 1]).uniform_(-bound, bound)))
            if i < len(sizes) - 2:
                self.ln_gain.append(nn.Parameter(torch.ones(n, 1, sizes[i + 1])))
                self.ln_bias.append(nn.Parameter(torch.zeros(n, 1, sizes[i + 1])))
        self.normalize = ObservationNormalizer(config.obs_dim)  # identity until the trainer sets it
        # sigma's features at periods from 1/100 to 4 (not saved: a function of the config)
        self.register_buffer("sigma_freqs", sinusoidal_frequencies(config.sigma_features, 1e-2, 4.0), persistent=False)
        if config.zero_init_output:
            with torch.no_grad():
                self.weights[-1].zero_()
                self.biases[-1].zero_()
        self.eps_c_proj = (
            nn.Linear(config.embed_dim, config.eps_c_proj) if "eps_c" in config.heads and config.eps_c_proj else None
        )

    def features(self, obs: torch.Tensor, actions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Concatenate the critic input (b, input_dim) from observation features and head actions."""
        parts = [self.normalize(obs)]
        if "z" in self.config.heads:
            parts.append(actions["z"])
        if "y" in self.config.heads:
            parts.append(sinusoidal_features(y_position(actions["y"]), self.sigma_freqs))
        if "eps_c" in self.config.heads:
            eps = actions["eps_c"]
            parts.append(self.eps_c_proj(eps) if self.eps_c_proj is not None else eps)
        x = torch.cat(parts, dim=-1)
        if x.shape[-1] != self.config.input_dim:
            raise ValueError(f"critic input has width {x.shape[-1]}, expected {self.config.input_dim}")
        return x

    def forward(self, obs: torch.Tensor, actions: dict[str, torch.Tensor]) -> torch.Tensor:
        """Q-values of every critic, (N, b), in one batched pass."""
        x = self.features(obs, actions)  # (b, d)
        h = x.unsqueeze(0).expand(self.config.num_critics, -1, -1)  # (N, b, d)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b, h, w)  # (N, b, out)
            if i < last:
                h = F.layer_norm(h, h.shape[-1:]) * self.ln_gain[i] + self.ln_bias[i]
                h = F.mish(h)
        return h.squeeze(-1)

    def forward_looped(self, obs: torch.Tensor, actions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same function, one critic at a time (reference for tests and the benchmark)."""
        x = self.features(obs, actions)
        outs = []
        last = len(self.weights) - 1
        for k in range(self.config.num_critics):
            h = x
            for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
                h = h @ w[k] + b[k]
                if i < last:
                    h = F.layer_norm(h, h.shape[-1:]) * self.ln_gain[i][k] + self.ln_bias[i][k]
                    h = F.mish(h)
            outs.append(h.squeeze(-1))
        return torch.stack(outs)
