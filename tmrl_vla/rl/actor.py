"""``HighLevelPolicy``: the small SAC actor that steers a frozen CSP policy once per action chunk.

Three tanh-Gaussian heads, each in [-1, 1] (TMRL paper, section 3):

* ``z``: the flow's initial-noise latent (action dimension), repeated over the chunk as in DSRL;
* ``y``: one scalar; ``sigma = ((y + 1) / 2) ** k``, ``k = 1`` unless ``sigma_centre`` moves the
  sigma that ``y = 0`` gives (:func:`sigma_from_y`);
* ``eps_c``: the context noise (the VLA's embedding width), tiled over the context tokens.

Any head can be switched off; DSRL is ``heads=("z",)`` on the plain BC policy. Log-probabilities are
tanh-corrected and summed within each head and kept per head, because each head has its own
temperature tuned towards its own target entropy.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tmrl_vla.rl.config import HEADS
from tmrl_vla.rl.normalize import ObservationNormalizer
from tmrl_vla.rl.sac import gaussian_kl

ATANH_EPS = 1e-6


@dataclass(frozen=True)
class HighLevelConfig:
    """The actor's shape. ``heads``, ``hidden``, ``init_temperature`` and ``target_entropy`` are
    documented on :class:`~tmrl_vla.rl.config.AgentConfig`, which the trainer builds this from."""

    obs_dim: int  # width of the observation features
    action_dim: int  # width of z (the policy's action dimension)
    embed_dim: int  # width of eps_c (the VLA's prefix embedding width)
    heads: tuple[str, ...] = HEADS
    hidden: int = 256
    num_layers: int = 2  # hidden layers of the trunk (0: the heads read the observation directly)
    log_std_min: float = -5.0  # lower bound of every head's log standard deviation
    log_std_max: float = 2.0  # upper bound of every head's log standard deviation
    target_entropy: dict[str, float] = field(default_factory=dict)
    init_temperature: float = 0.05
    init_sigma: float | None = None  # see AgentConfig.init_sigma
    init_std: float | None = None  # see AgentConfig.init_std
    sigma_centre: float = 0.5  # see AgentConfig.sigma_centre
    # Heads not named in target_entropy aim at their start's entropy instead of -dim (set when the
    # KL anchor is on: SACConfig.anchor_weight), so the temperature and the anchor agree on where
    # the actor rests.
    targets_from_start: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.heads) - set(HEADS)
        if not self.heads or unknown:
            raise ValueError(f"heads must be a non-empty subset of {HEADS}, got {self.heads}")
        if self.log_std_min >= self.log_std_max:
            raise ValueError("log_std_min must be < log_std_max")
        if self.init_std is not None and not self.log_std_min < math.log(self.init_std) < self.log_std_max:
            lo, hi = math.exp(self.log_std_min), math.exp(self.log_std_max)
            raise ValueError(f"init_std must lie strictly between {lo:.4g} and {hi:.4g}, got {self.init_std}")
        if self.init_sigma is not None and not 0 < self.init_sigma < 1:
            raise ValueError(f"init_sigma must lie strictly between 0 and 1, got {self.init_sigma}")
        if not 0 < self.sigma_centre < 1:
            raise ValueError(f"sigma_centre must lie strictly between 0 and 1, got {self.sigma_centre}")
        if self.init_sigma is not None and "y" not in self.heads:
            raise ValueError("init_sigma sets the y head's start, but this actor has no y head")
        extra = set(self.target_entropy) - set(self.heads)
        if extra:
            raise ValueError(f"target_entropy names heads that are off: {sorted(extra)}")

    def head_dim(self, head: str) -> int:
        return {"z": self.action_dim, "y": 1, "eps_c": self.embed_dim}[head]

    def target(self, head: str) -> float:
        """The head's target entropy: as named in ``target_entropy``; else its start's entropy with
        ``targets_from_start``; else -dim (SAC's usual choice).

        Why the start's: a start narrower than -dim (sigma 0.05 at spread 0.22 has -1.77 nats on the
        one-dimensional y head) can never reach the target while the anchor holds it there, so the
        temperature grows without bound (measured on the simulated SO-101: alpha_y 0.05 -> 0.32 in
        240 decisions, x6), until its bonus outweighs the anchor and spreads sigma."""
        if head in self.target_entropy:
            return float(self.target_entropy[head])
        if self.targets_from_start:
            return self.head_dim(head) * tanh_gaussian_entropy(*self.start(head))
        return float(-self.head_dim(head))

    def start(self, head: str) -> tuple[float, float]:
        """The (mean, log_std) before the tanh, the same in every dimension, that ``head`` is meant
        to start from: mean 0 (for ``y`` with ``init_sigma`` set, the y that gives it), log_std of
        ``init_std`` when set, else the middle of its range (what a raw output of 0 gives, about
        what the random init gives). Unlike the biases, this does not move in training."""
        mean = 0.0
        if head == "y" and self.init_sigma is not None:
            mean = math.atanh(y_from_sigma(self.init_sigma, self.sigma_centre))
        log_std = math.log(self.init_std) if self.init_std is not None else 0.5 * (self.log_std_min + self.log_std_max)
        return mean, log_std


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.Mish())
    return nn.Sequential(*layers)


def tanh_log_det(u: torch.Tensor) -> torch.Tensor:
    """log|d tanh(u)/du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), the stable form."""
    return 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))


@functools.lru_cache(maxsize=64)
def tanh_gaussian_entropy(mean: float, log_std: float) -> float:
    """Entropy (nats) of ``tanh(u)`` for ``u ~ N(mean, exp(log_std))`` in one dimension: the
    Gaussian's plus E[log(1 - tanh(u)^2)], the expectation by 80-point Gauss-Hermite quadrature, the
    same number every time (checked against 150 points: within 1e-11 up to a spread of 1, 0.01 nats
    at the widest spread the heads allow, 7.4, where the integrand is nearly |u| with a kink)."""
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.hermite_e.hermegauss(80))
    u = mean + math.exp(log_std) * nodes
    expected_log_det = float((weights * tanh_log_det(u)).sum()) / math.sqrt(2.0 * math.pi)
    gaussian = 0.5 * math.log(2.0 * math.pi * math.e) + log_std
    return gaussian + expected_log_det


def tanh_gaussian_log_prob(u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log density of ``tanh(u)`` for ``u ~ N(mean, exp(log_std))``, summed over the last dim."""
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (gauss - tanh_log_det(u)).sum(-1)


def sample_heads(
    distribution: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    noise: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tanh-Gaussian draws per head (b, dim) and their log-probs (b,) from per-head (mean, log_std)."""
    actions, log_probs = {}, {}
    for name, (mean, log_std) in distribution.items():
        if deterministic:
            u = mean
        else:
            if noise is not None:
                eps = noise[name].to(device=mean.device, dtype=mean.dtype)
            else:
                eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            u = mean + log_std.exp() * eps
        actions[name] = torch.tanh(u)
        log_probs[name] = tanh_gaussian_log_prob(u, mean, log_std)
    return actions, log_probs


class HighLevelPolicy(nn.Module):
    def __init__(self, config: HighLevelConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.obs_dim] + [config.hidden] * config.num_layers
        self.normalize = ObservationNormalizer(config.obs_dim)  # identity until the trainer sets it
        self.trunk = mlp(sizes) if config.num_layers else nn.Identity()
        self.trunk_act = nn.Mish()
        width = sizes[-1]
        self.heads = nn.ModuleDict({h: nn.Linear(width, 2 * config.head_dim(h)) for h in config.heads})
        # One temperature per head, kept as log alpha (SAC, Haarnoja et al. 2018b).
        self.log_alpha = nn.ParameterDict(
            {h: nn.Parameter(torch.tensor(math.log(config.init_temperature))) for h in config.heads}
        )
        self._set_start(config)

    @torch.no_grad()
    def _set_start(self, config: HighLevelConfig) -> None:
        """Point the heads' biases at the configured start (``init_sigma``, ``init_std``).

        The biases are what every head outputs when the trunk's features are zero, so they are the
        actor's state-independent start: :meth:`prior` reads them back."""
        lo, hi = config.log_std_min, config.log_std_max
        for name, layer in self.heads.items():
            dim = config.head_dim(name)
            mean, log_std = config.start(name)
            if config.init_std is not None:  # invert log_std = lo + (hi - lo) (tanh(raw) + 1) / 2
                layer.bias[dim:] = math.atanh(2.0 * (log_std - lo) / (hi - lo) - 1.0)
            if name == "y" and config.init_sigma is not None:
                layer.bias[:dim] = mean

    def prior(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per head, the (mean, log_std) (1, dim) that the head's biases alone give: the actor's
        start, independent of the state (warm-up draws with ``warmup_heads="prior"`` come from it)."""
        lo, hi = self.config.log_std_min, self.config.log_std_max
        out = {}
        for name, layer in self.heads.items():
            mean, raw = layer.bias.detach()[None].chunk(2, dim=-1)
            out[name] = (mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0))
        return out

    def distribution(self, obs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per head: (mean, log_std), log_std squashed into [log_std_min, log_std_max]."""
        if obs.shape[-1] != self.config.obs_dim:
            raise ValueError(f"observation features must have width {self.config.obs_dim}, got {obs.shape[-1]}")
        obs = self.normalize(obs)
        h = self.trunk_act(self.trunk(obs)) if self.config.num_layers else obs
        out = {}
        lo, hi = self.config.log_std_min, self.config.log_std_max
        for name, layer in self.heads.items():
            mean, raw = layer(h).chunk(2, dim=-1)
            out[name] = (mean, lo + 0.5 * (hi - lo) * (torch.tanh(raw) + 1.0))
        return out

    def sample(
        self,
        obs: torch.Tensor,
        *,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        noise: dict[str, torch.Tensor] | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Actions in [-1, 1] per head (b, dim) and their log-probs per head (b,) (reparameterised).

        ``noise``: the standard-normal draws to use per head (b, dim) instead of fresh ones, e.g.
        draws held for a whole episode (temporally consistent exploration, see the collector).
        """
        return sample_heads(self.distribution(obs), deterministic=deterministic, generator=generator, noise=noise)

    def log_prob(self, obs: torch.Tensor, actions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per head, the log-density (b,) of given actions in [-1, 1] (e.g. replayed ones).

        Actions are pulled inside (-1, 1) by a hair before ``atanh``: a saturated float32 tanh reads
        exactly +-1, whose pre-image is infinite.
        """
        out = {}
        for name, (mean, log_std) in self.distribution(obs).items():
            a = actions[name].to(device=mean.device, dtype=mean.dtype)
            if a.shape != mean.shape:
                raise ValueError(f"head {name!r}: actions of shape {tuple(a.shape)}, expected {tuple(mean.shape)}")
            u = torch.atanh(a.clamp(-1.0 + ATANH_EPS, 1.0 - ATANH_EPS))
            out[name] = tanh_gaussian_log_prob(u, mean, log_std)
        return out

    def anchor_kl(self, distribution: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Per head, KL(pi(.|obs) || the head's configured start) (b,), summed over its dimensions, for
        the heads' :meth:`distribution` at obs (the one the actor's step sampled from, not recomputed).

        The tanh is one-to-one, so the KL between the squashed distributions is the one between the
        Gaussians before it, which has a closed form (:func:`~tmrl_vla.rl.sac.gaussian_kl`)."""
        out = {}
        for name, (mean, log_std) in distribution.items():
            mean0, log_std0 = self.config.start(name)
            out[name] = gaussian_kl(mean, log_std, torch.full_like(mean, mean0), torch.full_like(log_std, log_std0))
        return out

    def sigma(self, y: torch.Tensor) -> torch.Tensor:
        """Sigma (b,) for the y head's (b, 1) output, by this actor's map (``sigma_centre``)."""
        return sigma_from_y(y, self.config.sigma_centre)

    def alphas(self) -> dict[str, torch.Tensor]:
        return {h: v.exp() for h, v in self.log_alpha.items()}

    def actor_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters()) + list(self.heads.parameters())


def y_position(y: torch.Tensor) -> torch.Tensor:
    """The y head's (b, 1) output in [-1, 1] -> its position (b,) in [0, 1], ``(y + 1) / 2``."""
    return ((y.squeeze(-1) + 1.0) / 2.0).clamp(0.0, 1.0)


def sigma_exponent(centre: float) -> float:
    """The k of ``sigma = position ** k`` that puts ``centre`` at ``y = 0`` (position 1/2)."""
    return math.log(centre) / math.log(0.5)


def sigma_from_y(y: torch.Tensor, centre: float = 0.5) -> torch.Tensor:
    """The y head's (b, 1) output in [-1, 1] -> sigma (b,) in [0, 1], with ``y = 0`` at ``centre``.

    A tanh-Gaussian's entropy is largest with its mean at 0, so an actor that its critics do not yet
    inform (0/1 rewards, early on) drifts towards ``y = 0`` whatever its start. ``centre`` says which
    sigma that resting point is: 0.5 (the paper's linear map) or lower, near the base policy (sigma 0
    is the policy itself), with every sigma in [0, 1] still reachable."""
    return y_position(y) ** sigma_exponent(centre)  # exponent 1.0 at 0.5: the position itself, exactly


def y_from_sigma(sigma: float, centre: float = 0.5) -> float:
    """The inverse of :func:`sigma_from_y` for one sigma in (0, 1)."""
    return 2.0 * sigma ** (1.0 / sigma_exponent(centre)) - 1.0
