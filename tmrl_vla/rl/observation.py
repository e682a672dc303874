"""What the high-level policy and its critics observe: the VLA's clean prefix pooled, plus the state.

Per decision the frozen CSP policy embeds the clean prefix once (:meth:`CSPPolicy.encode_prefix`);
the observation pools it and the same prefix is reused to sample the chunk, so the vision encoder
runs once per decision. Pooling: image tokens averaged, whole or on a coarse ``image_grid`` per
camera (a mean keeps *what* is in view but little of *where*; a 2 x 2 grid keeps coarse position),
then the mean language token, then the normalised proprioception. With a separate frozen
:class:`~tmrl_vla.rl.encoder.ObservationEncoder` its pooled patch tokens replace the pooled prefix.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tmrl_vla.backends import PrefixSegments
from tmrl_vla.csp.policy import CSPPolicy, PrefixCache
from tmrl_vla.rl.encoder import ObservationEncoder


def image_keys(csp: CSPPolicy) -> list[str]:
    """The policy's camera keys, in its config's order."""
    return list(csp.base_policy.config.image_features)


def num_cameras(csp: CSPPolicy) -> int:
    """Cameras in the policy's prefix (empty camera slots included)."""
    config = csp.base_policy.config
    return len(config.image_features) + int(getattr(config, "empty_cameras", 0) or 0)


def pool_prefix(embs: torch.Tensor, segments: PrefixSegments, image_grid: int, cameras: int) -> torch.Tensor:
    """(b, n, D) prefix -> (b, (cameras * image_grid^2 + 1) D): pooled image tokens, then the mean
    language token, padding excluded (on the tiny default, 16 tokens per 64 x 64 image: a 4 x 4 grid)."""
    embs = embs.float()
    b, _, d = embs.shape
    parts = []
    if image_grid == 1:
        m = segments.image[..., None].float()
        parts.append((embs * m).sum(1) / m.sum(1).clamp_min(1.0))
    else:
        counts = segments.image.sum(1)
        if not bool((counts == counts[0]).all()):
            raise ValueError("grid pooling needs the same number of image tokens in every sample")
        tokens = embs[segments.image].view(b, -1, d)
        side = math.isqrt(tokens.shape[1] // cameras)
        if cameras * side * side != tokens.shape[1] or side % image_grid:
            raise ValueError(
                f"cannot pool {tokens.shape[1]} image tokens from {cameras} camera(s) on a "
                f"{image_grid} x {image_grid} grid: each camera's tokens must form a square grid divisible by it "
                "(choose another --rl.observation.image_grid; 1 pools each camera's tokens to their mean)"
            )
        grid = tokens.view(b * cameras, side, side, d).permute(0, 3, 1, 2)
        pooled = F.adaptive_avg_pool2d(grid, image_grid)  # (b * cams, d, g, g)
        parts.append(pooled.view(b, cameras, d, -1).permute(0, 1, 3, 2).reshape(b, -1))
    m = segments.language[..., None].float()
    parts.append((embs * m).sum(1) / m.sum(1).clamp_min(1.0))
    return torch.cat(parts, dim=-1)


def prefix_features(csp: CSPPolicy, cache: PrefixCache, image_grid: int = 1) -> torch.Tensor:
    """Pooled clean-prefix features (b, (cameras * image_grid^2 + 1) D), without the state."""
    return pool_prefix(cache.outputs[0], csp.prefix_segments(cache), image_grid, num_cameras(csp))


def prefix_feature_width(csp: CSPPolicy, image_grid: int = 1) -> int:
    """Width of :func:`prefix_features`."""
    return (num_cameras(csp) * image_grid**2 + 1) * csp.embed_width


def feature_width(
    csp: CSPPolicy, state_dim: int, image_grid: int = 1, encoder: ObservationEncoder | None = None
) -> int:
    """Width of :func:`observation_features`."""
    if encoder is None:
        return prefix_feature_width(csp, image_grid) + state_dim
    return encoder.feature_width(len(image_keys(csp)), image_grid) + state_dim


def observation_features(
    csp: CSPPolicy, cache: PrefixCache, batch: dict, image_grid: int = 1, encoder: ObservationEncoder | None = None
) -> torch.Tensor:
    """(b, F + S): the pooled clean prefix, or the separate ``encoder``'s pooled patch tokens of every
    camera, then the normalised state."""
    if encoder is None:
        pooled = prefix_features(csp, cache, image_grid)
    else:
        missing = [k for k in image_keys(csp) if k not in batch]
        if missing:
            raise KeyError(f"the observation encoder needs the policy's cameras; the batch lacks {missing}")
        pooled = encoder([batch[k] for k in image_keys(csp)], image_grid)
    return torch.cat([pooled.to(batch["observation.state"].device), batch["observation.state"].float()], dim=-1)


@torch.no_grad()
def encode(
    csp: CSPPolicy, batch: dict, image_grid: int = 1, encoder: ObservationEncoder | None = None
) -> tuple[PrefixCache, torch.Tensor]:
    """(clean prefix cache, observation features) of a preprocessed batch: the VLA's one vision
    pass (and the separate encoder's, when there is one)."""
    cache = csp.encode_prefix(batch)
    return cache, observation_features(csp, cache, batch, image_grid, encoder)
