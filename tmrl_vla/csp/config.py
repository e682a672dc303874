"""Configuration of context-smoothed pre-training (CSP), saved with every adapter as ``csp_config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

NoiseScale = Literal["segment", "none"]
ContextNoiseMode = Literal["iid", "tiled"]


@dataclass(frozen=True)
class CSPConfig:
    # Steps T of the DDPM schedule over the context (paper: T = 1000 for VLAs, 100 in its state-based
    # runs); sigma in [0, 1] selects step k = round(sigma * (T - 1)).
    num_timesteps: int = 1000
    beta_start: float = 1e-4  # first beta of the linear schedule (the paper's 1e-4)
    beta_end: float = 0.02  # last beta of the linear schedule (the paper's 0.02)
    noise_image: bool = True  # noise the prefix's image tokens
    noise_language: bool = True  # noise the prefix's language tokens (for pi0.5 they hold the state too)
    # Noise the prefix's state token (SmolVLA only: pi0 and pi0.5 have none). Off by default, so
    # sigma = 1 samples p(a | state): from the fixed start pose, the demos' action marginal.
    noise_state: bool = False
    # "segment": unit noise is multiplied by each segment's typical token RMS (``segment_scale``),
    # i.e. the DDPM process runs in units of the tokens' own scale, so sigma = 1 leaves no usable
    # context even though SmolVLA scales its prefix by sqrt(D). "none": raw unit noise (the
    # PyTorch pi0 port's behaviour; on SmolVLA it leaves the context readable up to sigma ~0.5).
    noise_scale: NoiseScale = "segment"
    # Token RMS per segment for noise_scale="segment", {"image": s, "language": s, "state": s};
    # empty: the CSP trainer measures it on its calibration batches and saves it with the adapter.
    segment_scale: dict[str, float] = field(default_factory=dict)
    # Context noise: "iid" draws a fresh vector per token (training default, as in the paper);
    # "tiled" repeats one D-vector over all context tokens (what TMRL's eps_c head feeds).
    context_noise: ContextNoiseMode = "iid"
    # Sinusoidal features of sigma (an even number) in the embedding added at the action expert's
    # time input; the embedding is zero at sigma = 0 by construction.
    sigma_embedding_dim: int = 32
    lora_r: int = 16  # rank of the LoRA adapter
    lora_alpha: int = 32  # LoRA scale numerator: the adapter's update is multiplied by lora_alpha / lora_r
    lora_dropout: float = 0.0  # dropout on the LoRA branch's input while training
    lora_target_modules: str | None = None  # PEFT target_modules regex; None: the backend's default

    def __post_init__(self) -> None:
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not (self.noise_image or self.noise_language or self.noise_state):
            raise ValueError("CSP needs at least one noised segment (noise_image, noise_language or noise_state)")
        if self.noise_scale not in ("segment", "none"):
            raise ValueError(f"noise_scale must be 'segment' or 'none', got {self.noise_scale!r}")
        if self.context_noise not in ("iid", "tiled"):
            raise ValueError(f"context_noise must be 'iid' or 'tiled', got {self.context_noise!r}")
        if self.sigma_embedding_dim < 2 or self.sigma_embedding_dim % 2:
            raise ValueError(f"sigma_embedding_dim must be an even number >= 2, got {self.sigma_embedding_dim}")
        unknown = set(self.segment_scale) - {"image", "language", "state"}
        if unknown:
            raise ValueError(f"segment_scale has unknown segments {sorted(unknown)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> CSPConfig:
        """Tolerates keys from newer versions (ignored), like PEFT's adapter configs."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
