"""pi0 (LeRobot 0.6.1, ``lerobot.policies.pi0``).

Prefix layout, from ``PI0Pytorch.embed_prefix(images, img_masks, lang_tokens, lang_masks)``: for each camera (in
``config.image_features`` order, cameras missing from the batch last) the SigLIP patch tokens projected to the
PaliGemma width by ``PaliGemmaWithExpertModel.embed_image`` ((image_size / patch_size)^2 per camera, 256 at 224 px),
then the ``lang_tokens.shape[1]`` language tokens. There is no state token in the prefix: pi0 projects the state
into the *suffix* (``PI0Pytorch.embed_suffix``: ``state_proj`` makes one action-expert token ahead of the action
tokens), so context smoothing never reaches the state and the ``state`` segment is always empty.

Labelling: ``att_masks`` is all zeros (the whole prefix attends bidirectionally), so unlike SmolVLA's state-token
marker it cannot say where a segment starts. The language block is instead the last ``lang_tokens.shape[1]``
positions (it is appended after every camera), and everything before it is image. ``pad_masks`` marks padding in
both: a camera absent from the batch becomes a -1 image whose mask is False for all its tokens
(``PI0Policy._preprocess_images``), and right-padded language positions are False in ``lang_masks``; every label is
AND-ed with ``pad_masks`` so padding is never labelled. Language embeddings carry Gemma's sqrt(D) scale
(``GemmaTextScaledWordEmbedding``) and image tokens do not, which is why ``noise_scale="segment"`` calibrates a
scale per segment.

Sigma enters at ``action_time_mlp_in``. In ``PI0Pytorch.embed_suffix`` the flow time's sinusoidal embedding is
concatenated to every projected noisy action and fused by ``action_time_mlp_in`` -> SiLU -> ``action_time_mlp_out``;
this is the only way time reaches the action expert (``adarms_cond`` is None for pi0). Adding the sigma embedding to
``action_time_mlp_in``'s output (b, chunk, W) conditions each action token on sigma exactly where it is conditioned
on the flow time, before the nonlinearity; the hook broadcasts the (b, W) embedding over the chunk.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from tmrl_vla.backends.base import BACKENDS, PrefixSegments, VLABackend


@BACKENDS.register("pi0")
class PI0Backend(VLABackend):
    policy_type = "pi0"
    has_state_token = False  # pi0 feeds the state to the action expert; pi0.5 writes it into the language
    # Name of embed_prefix's third parameter (the token ids), should a caller pass it by keyword.
    token_arg: ClassVar[str] = "lang_tokens"

    def segments(self, flow_model: nn.Module, args: tuple, kwargs: dict[str, Any], outputs: tuple) -> PrefixSegments:
        tokens = kwargs[self.token_arg] if self.token_arg in kwargs else args[2]
        _, pad_masks, _ = outputs
        b, n = pad_masks.shape
        lang_start = n - tokens.shape[1]
        pos = torch.arange(n, device=pad_masks.device).expand(b, n)
        image = (pos < lang_start) & pad_masks
        language = (pos >= lang_start) & pad_masks
        return PrefixSegments(image=image, language=language, state=torch.zeros_like(pad_masks))

    def time_layer(self, flow_model: nn.Module) -> nn.Module:
        return flow_model.action_time_mlp_in

    def expert_width(self, flow_model: nn.Module) -> int:
        return flow_model.paligemma_with_expert.gemma_expert.config.hidden_size

    def embed_width(self, flow_model: nn.Module) -> int:
        # Image tokens are projected to this width too (multi_modal_projector -> text hidden size).
        return flow_model.paligemma_with_expert.paligemma.config.text_config.hidden_size

    def default_lora_targets(self) -> str:
        # LeRobot's own pi0 PEFT defaults (``PI0Policy._get_default_peft_targets``: q/v of the action expert and the
        # state/action/time projections), plus q/v of PaliGemma's language-model layers: CSP must teach the VLM to
        # read a noised context, which adapters on the expert alone cannot do. The SigLIP tower is left alone.
        heads = r".*\.(gemma_expert|paligemma\.model\.language_model)\..*\.self_attn\.(q|v)_proj"
        projections = r"model\.(state_proj|action_in_proj|action_out_proj|action_time_mlp_in|action_time_mlp_out)"
        return rf"({heads}|{projections})"
