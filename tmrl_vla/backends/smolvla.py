"""SmolVLA (LeRobot 0.6.1, ``lerobot.policies.smolvla``).

Prefix layout from ``VLAFlowMatching.embed_prefix``: per camera the image tokens (with optional
start/end special tokens), then the language tokens, then one state token, then right padding up to
``prefix_length`` when that is set. Its ``att_masks`` mark the state token with 1 and everything
else with 0, and its ``pad_masks`` are False on padded language and pad positions, so the state
token's index locates every segment even when the prefix is padded.
Sigma enters at ``action_time_mlp_in``, the first layer of the MLP that fuses the noisy action and
the flow time (the same place pi0 has it).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tmrl_vla.backends.base import BACKENDS, PrefixSegments, VLABackend


@BACKENDS.register("smolvla")
class SmolVLABackend(VLABackend):
    policy_type = "smolvla"

    def segments(self, flow_model: nn.Module, args: tuple, kwargs: dict[str, Any], outputs: tuple) -> PrefixSegments:
        lang_tokens = kwargs["lang_tokens"] if "lang_tokens" in kwargs else args[2]
        _, pad_masks, att_masks = outputs
        b, n = pad_masks.shape
        state_at = att_masks[0].int().argmax().item()  # first (and only) position marked 1
        lang_len = lang_tokens.shape[1]
        pos = torch.arange(n, device=pad_masks.device).expand(b, n)
        image = (pos < state_at - lang_len) & pad_masks
        language = (pos >= state_at - lang_len) & (pos < state_at) & pad_masks
        state = (pos == state_at) & pad_masks
        return PrefixSegments(image=image, language=language, state=state)

    def prefix_inputs(self, policy: nn.Module, batch: dict) -> tuple[tuple, dict[str, Any]]:
        # Mirrors SmolVLAPolicy._get_action_chunk: prepare_images, prepare_state, the tokenised task.
        images, img_masks = policy.prepare_images(batch)
        args = (images, img_masks, batch["observation.language.tokens"], batch["observation.language.attention_mask"])
        return args, {"state": policy.prepare_state(batch)}

    def time_layer(self, flow_model: nn.Module) -> nn.Module:
        return flow_model.action_time_mlp_in

    def expert_width(self, flow_model: nn.Module) -> int:
        return flow_model.vlm_with_expert.expert_hidden_size

    def default_lora_targets(self) -> str:
        # LeRobot's own SmolVLA PEFT defaults (q/v of the action expert and the action/state
        # projections), plus q/v of the VLM's text layers: CSP must teach the VLM to read a noised
        # context, which adapters on the expert alone cannot do.
        heads = r"model\.vlm_with_expert\.(lm_expert|vlm\.model\.text_model)\..*\.(q|v)_proj"
        projections = r"model\.(state_proj|action_in_proj|action_out_proj|action_time_mlp_in|action_time_mlp_out)"
        return rf"({heads}|{projections})"
