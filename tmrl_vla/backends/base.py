"""What the CSP wrapper needs to know about one VLA family, and the registry of families.

A backend answers three questions about a LeRobot policy without editing its code:

* where the prefix embeddings are produced (a method of the flow model, wrapped per instance) and
  which of their positions are image, language and state tokens (padding is none of them);
* which layer's output receives the sigma embedding (the action expert's time input);
* the widths involved and the default LoRA targets.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from tmrl_vla.registry import Registry


@dataclass(frozen=True)
class PrefixSegments:
    """Boolean masks (b, n) over prefix positions; padding positions are False in all three."""

    image: torch.Tensor
    language: torch.Tensor
    state: torch.Tensor


class VLABackend(ABC):
    policy_type: ClassVar[str]
    prefix_method: ClassVar[str] = "embed_prefix"  # method of the flow model returning (embs, pad_masks, att_masks)
    has_state_token: ClassVar[bool] = True  # False where the state never enters the prefix (pi0, pi0.5)

    def flow_model(self, policy: nn.Module) -> nn.Module:
        """The inner module that owns ``embed_prefix`` and the action expert (LeRobot's ``policy.model``)."""
        return policy.model

    @abstractmethod
    def segments(self, flow_model: nn.Module, args: tuple, kwargs: dict[str, Any], outputs: tuple) -> PrefixSegments:
        """Label the prefix positions of one ``embed_prefix`` call from its inputs and outputs."""

    @abstractmethod
    def time_layer(self, flow_model: nn.Module) -> nn.Module:
        """The layer whose output gets the sigma embedding added (the action expert's time input)."""

    @abstractmethod
    def expert_width(self, flow_model: nn.Module) -> int:
        """Output width of :meth:`time_layer`."""

    def velocity_layer(self, flow_model: nn.Module) -> nn.Module:
        """The layer whose output is the flow's predicted velocity (b, chunk, max_action_dim); the same name in
        SmolVLA, pi0 and pi0.5."""
        return flow_model.action_out_proj

    def embed_width(self, flow_model: nn.Module) -> int:
        """Width D of a prefix token (the width of the context noise)."""
        return flow_model.vlm_with_expert.config.text_config.hidden_size

    @abstractmethod
    def default_lora_targets(self) -> str:
        """PEFT ``target_modules`` regex, relative to the policy."""

    def prefix_inputs(self, policy: nn.Module, batch: dict) -> tuple[tuple, dict[str, Any]]:
        """(args, kwargs) of ``embed_prefix`` for a preprocessed batch, as the policy itself would build them.

        Needed to compute the clean prefix once per decision and reuse it (features and sampling).
        """
        raise NotImplementedError(f"prefix reuse is not implemented for {self.policy_type} yet")

    def action_noise_shape(self, policy: nn.Module, batch_size: int) -> tuple[int, int, int]:
        """Shape of the flow's initial noise: (b, chunk, max_action_dim)."""
        return (batch_size, policy.config.chunk_size, policy.config.max_action_dim)


BACKENDS: Registry[type[VLABackend]] = Registry("VLA backend")


def backend_for(policy: nn.Module) -> VLABackend:
    """The backend registered for ``policy.config.type``; unsupported types name the supported ones."""
    policy_type = getattr(getattr(policy, "config", None), "type", None)
    if policy_type is None:
        raise TypeError(f"{type(policy).__name__} is not a LeRobot policy (no config.type)")
    if policy_type not in BACKENDS:
        raise NotImplementedError(
            f"No CSP backend for policy type {policy_type!r}. Supported: {', '.join(BACKENDS.names())}."
        )
    return BACKENDS.get(policy_type)()
