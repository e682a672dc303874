"""One high-level decision: encode the clean prefix once, pick (z, sigma, eps_c), sample a chunk.

Per decision (TMRL paper, section 3; design: "the vision encoder runs once per decision"):

1. the frozen CSP policy embeds the clean prefix (images and language) once;
2. the RL observation is the pooled clean prefix plus the proprioception (:mod:`tmrl_vla.rl.observation`);
3. the high-level policy picks z (repeated over the chunk as the flow's initial noise, as DSRL does),
   sigma = (y + 1) / 2 and eps_c (one D-vector tiled over the context tokens);
4. the CSP policy samples the chunk from z under the prefix noised at sigma, *reusing* the prefix
   from step 1.

DSRL is the same call with only the z head: sigma is 0 and no context noise is drawn, so the CSP
wrapper returns exactly the wrapped policy's output (a plain BC policy wrapped without training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tmrl_vla.csp.policy import CSPPolicy, PrefixCache
from tmrl_vla.rl.actor import HighLevelPolicy
from tmrl_vla.rl.encoder import ObservationEncoder
from tmrl_vla.rl.observation import encode


@dataclass(frozen=True)
class Decision:
    chunk: torch.Tensor  # (b, chunk, action_dim), in the policy's normalised action space
    actions: dict[str, torch.Tensor]  # head outputs in [-1, 1]
    log_probs: dict[str, torch.Tensor]
    features: torch.Tensor  # (b, obs_dim): the RL observation
    sigma: torch.Tensor  # (b,)
    prefix: PrefixCache | None = None  # the clean prefix the chunk was sampled from


def latent_to_noise(z: torch.Tensor, chunk_size: int, max_action_dim: int, scale: float) -> torch.Tensor:
    """(b, A) in [-1, 1] -> the flow's initial noise (b, chunk, max_action_dim): z * scale on the first A
    dimensions of every step of the chunk; the padded dimensions (cut from the output) get zeros."""
    b, a = z.shape
    noise = torch.zeros(b, chunk_size, max_action_dim, dtype=z.dtype, device=z.device)
    noise[:, :, :a] = scale * z[:, None, :]
    return noise


def random_heads(
    actor: HighLevelPolicy,
    batch_size: int,
    generator: torch.Generator | None = None,
    noise: dict[str, torch.Tensor] | None = None,
):
    """Uniform actions in [-1, 1] for every head (warm-up decisions); log-probs are not defined.

    ``noise``: standard-normal draws per head to map through the normal CDF instead of fresh uniform
    ones, so that a draw held over an episode gives a held uniform action.
    """
    if noise is not None:
        return {h: torch.special.ndtr(noise[h]) * 2 - 1 for h in actor.config.heads}, {}
    actions = {
        h: torch.rand(batch_size, actor.config.head_dim(h), generator=generator) * 2 - 1 for h in actor.config.heads
    }
    return actions, {}


def prior_heads(
    actor: HighLevelPolicy,
    batch_size: int,
    generator: torch.Generator | None = None,
    noise: dict[str, torch.Tensor] | None = None,
):
    """Heads drawn from the actor's state-independent start (:meth:`HighLevelPolicy.prior`: its
    ``init_sigma`` and ``init_std``), for warm-up decisions that look like the actor's first ones.

    ``noise``: standard-normal draws per head (held over an episode) instead of fresh ones."""
    actions = {}
    for h, (mean, log_std) in actor.prior().items():
        eps = noise[h] if noise is not None else torch.randn(batch_size, mean.shape[-1], generator=generator)
        actions[h] = torch.tanh(mean + log_std.exp() * eps.to(mean.dtype))
    return actions, {}


WARMUP_HEADS = {"uniform": random_heads, "prior": prior_heads}


@torch.no_grad()
def decide(
    csp: CSPPolicy,
    actor: HighLevelPolicy,
    batch: dict,
    *,
    z_scale: float = 1.0,
    deterministic: bool = False,
    warmup: str | None = None,
    generator: torch.Generator | None = None,
    encoded: tuple | None = None,
    image_grid: int = 1,
    noise: dict[str, torch.Tensor] | None = None,
    encoder: ObservationEncoder | None = None,
) -> Decision:
    """``encoded``: (prefix cache, features) already computed for this batch, e.g. as the previous
    transition's next observation; ``warmup``: a warm-up decision, its heads drawn by
    ``WARMUP_HEADS[warmup]`` (``"uniform"`` or ``"prior"``) instead of the actor;
    ``noise``: the heads' standard-normal exploration draws (fresh ones when None); ``encoder``: a
    separate frozen observation encoder (None: the pooled VLA prefix). Everything random
    here, the CSP context noise when no eps_c head picks it included, comes from ``generator``: an
    evaluation with its own generator leaves the training's random stream untouched."""
    cache, features = encoded if encoded is not None else encode(csp, batch, image_grid, encoder)
    b = features.shape[0]
    if warmup is not None:
        actions, log_probs = WARMUP_HEADS[warmup](actor, b, generator, noise)
    else:
        actions, log_probs = actor.sample(features, deterministic=deterministic, generator=generator, noise=noise)
    config = csp.base_policy.config
    noise = latent_to_noise(actions["z"], config.chunk_size, config.max_action_dim, z_scale)
    sigma = actor.sigma(actions["y"]) if "y" in actions else torch.zeros(b)
    context_noise = actions.get("eps_c")
    chunk = csp.predict_action_chunk(
        batch, sigma=sigma, context_noise=context_noise, noise=noise, prefix=cache, generator=generator
    )
    return Decision(chunk=chunk, actions=actions, log_probs=log_probs, features=features, sigma=sigma, prefix=cache)
