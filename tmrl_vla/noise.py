"""The DDPM forward process used to smooth a policy's context (pure functions, no state).

CSP corrupts the context ``c`` (never the actions) as ``c_k = sqrt(abar_k) c + sqrt(1 - abar_k) eps``
with linear betas from 1e-4 to 0.02 (Ho et al. 2020; the TMRL paper, section 2). A continuous
``sigma`` in [0, 1] indexes the schedule: ``k = round(sigma * (T - 1))``.

``sigma = 0`` means *exactly* the clean context. Standard DDPM indexing would give abar = 1 - 1e-4 at
the first step, which perturbs every token slightly; :func:`forward_noise` bypasses noising where
``sigma == 0`` so a CSP policy at sigma = 0 reproduces its inputs bit for bit.

Scale: ``eps`` here is whatever noise the caller passes; unit-variance noise only means something
relative to the tokens' scale. SmolVLA multiplies its prefix embeddings by sqrt(D) (RMS ~20-30 on the
tiny default), which unit noise barely touches. Scale-aware noise is therefore the CSP config's job:
with ``noise_scale="segment"`` the policy multiplies unit noise by each prefix segment's calibrated
token RMS (``CSPConfig.segment_scale``) before calling :func:`forward_noise`.
"""

from __future__ import annotations

import torch


def linear_beta_schedule(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """abar_k for k = 0 .. T-1 (float64 for accuracy; cast at use)."""
    if num_steps < 1:
        raise ValueError(f"num_steps (T) must be >= 1, got {num_steps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    betas = torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def check_sigma(sigma: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
    """Validate a per-sample sigma of shape (b,) with values in [0, 1]."""
    sigma = torch.as_tensor(sigma)
    if sigma.ndim != 1 or (batch_size is not None and sigma.shape[0] != batch_size):
        want = f"({batch_size},)" if batch_size is not None else "(b,)"
        raise ValueError(f"sigma must have shape {want} (one value per sample), got {tuple(sigma.shape)}")
    if not torch.isfinite(sigma).all() or (sigma < 0).any() or (sigma > 1).any():
        raise ValueError(f"sigma must lie in [0, 1], got min {sigma.min().item()} max {sigma.max().item()}")
    return sigma


def sigma_to_index(sigma: torch.Tensor, num_steps: int) -> torch.Tensor:
    """k = round(sigma * (T - 1)), as long integers."""
    return torch.round(sigma.double() * (num_steps - 1)).long()


def alpha_bar(sigma: torch.Tensor, schedule: torch.Tensor) -> torch.Tensor:
    """abar at each sample's sigma, with abar = 1 exactly where sigma == 0."""
    abar = schedule.to(sigma.device)[sigma_to_index(sigma, schedule.shape[0])]
    return torch.where(sigma == 0, torch.ones_like(abar), abar)


def forward_noise(
    context: torch.Tensor,
    sigma: torch.Tensor,
    schedule: torch.Tensor,
    eps: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sqrt(abar) c + sqrt(1 - abar) eps`` per sample, only where ``mask`` is set.

    context, eps: (b, n, D); sigma: (b,); mask: (b, n) bool (True = noise this token). Tokens outside
    the mask and samples with sigma == 0 are returned unchanged (the same values, not recomputed).
    """
    b = context.shape[0]
    sigma = check_sigma(sigma, b).to(context.device)
    if eps.shape != context.shape:
        raise ValueError(f"context noise must have the context's shape {tuple(context.shape)}, got {tuple(eps.shape)}")
    abar = alpha_bar(sigma, schedule).to(context.dtype)[:, None, None]  # (b, 1, 1)
    noised = abar.sqrt() * context + (1 - abar).sqrt() * eps.to(context.dtype)
    keep = (sigma == 0)[:, None, None]
    if mask is not None:
        keep = keep | ~mask[..., None]
    return torch.where(keep, context, noised)
