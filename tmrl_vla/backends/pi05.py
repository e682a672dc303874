"""pi0.5 (LeRobot 0.6.1, ``lerobot.policies.pi05``).

Prefix layout, from ``PI05Pytorch.embed_prefix(images, img_masks, tokens, masks)``: the same as pi0's (per camera
the projected SigLIP tokens, then ``tokens.shape[1]`` language tokens, no separate state token, all-zero
``att_masks``), so the segments are labelled the same way (:class:`~tmrl_vla.backends.pi0.PI0Backend`).

The state is *inside the language tokens*. ``Pi05PrepareStateTokenizerProcessorStep`` (``processor_pi05.py``)
takes the normalised state (quantile-normalised to [-1, 1]), digitises each dimension into 256 bins and writes the
prompt ``"Task: <task>, State: <bin> <bin> ...;\\nAction: "``, which the PaliGemma tokenizer then right-pads to
``tokenizer_max_length`` (200). The model has no ``state_proj`` and ``PI05Policy.forward`` /
``predict_action_chunk`` never read ``observation.state``. Where the state digits start cannot be found from the
token ids without the tokenizer, so they are labelled *language*: with ``noise_language=True`` the state is noised
together with the task text, so at sigma = 1 pi0.5 loses the state as well (unlike SmolVLA, whose state token stays
clean by default, and pi0, whose state is in the suffix). The ``state`` segment is always empty.

Sigma enters at ``time_mlp_in``. In ``PI05Pytorch.embed_suffix`` the noisy actions go through ``action_in_proj``
alone, without time; the flow time's sinusoidal embedding (b, W) goes through ``time_mlp_in`` -> SiLU ->
``time_mlp_out`` -> SiLU and becomes ``adarms_cond``, which every adaptive RMSNorm of the action expert
(``PiGemmaRMSNorm`` with ``cond_dim``: each layer's input and post-attention norms and the final norm) turns into a
scale, shift and residual gate. ``time_mlp_in`` is therefore the only entry point of time into the expert, and its
output is (b, W), not (b, chunk, W); the hook adds the (b, W) sigma embedding to it directly, so sigma modulates
every expert layer through the same adaRMS path as the flow time. (``PiGemmaRMSNorm.__init__`` zero-initialises
the modulation weights, so in a freshly initialised, untrained pi0.5 neither time nor sigma reaches the expert and
the sigma embedding gets no gradient; pretrained checkpoints have them non-zero.)
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from tmrl_vla.backends.base import BACKENDS
from tmrl_vla.backends.pi0 import PI0Backend


@BACKENDS.register("pi05")
class PI05Backend(PI0Backend):
    policy_type = "pi05"
    token_arg: ClassVar[str] = "tokens"

    def time_layer(self, flow_model: nn.Module) -> nn.Module:
        return flow_model.time_mlp_in

    def default_lora_targets(self) -> str:
        # ``PI05Policy._get_default_peft_targets`` is pi0's list verbatim and so names ``state_proj`` and
        # ``action_time_mlp_*``, which pi0.5 does not have (its checkpoint loader renames ``action_time_mlp_*`` to
        # ``time_mlp_*`` and drops ``state_proj``): in effect it adapts only the expert's q/v and the action
        # projections. We target the layers it means under their pi0.5 names, plus q/v of PaliGemma's
        # language-model layers so the VLM can learn to read a noised context.
        heads = r".*\.(gemma_expert|paligemma\.model\.language_model)\..*\.self_attn\.(q|v)_proj"
        projections = r"model\.(action_in_proj|action_out_proj|time_mlp_in|time_mlp_out)"
        return rf"({heads}|{projections})"
