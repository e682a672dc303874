"""``CSPPolicy``: a LeRobot VLA whose context can be smoothed at a diffusion timestep sigma.

The wrapper composes, it never edits LeRobot code:

* a PEFT LoRA adapter on the policy (``get_peft_model``, as LeRobot's own ``wrap_with_peft``);
* the flow model's ``embed_prefix`` is wrapped *on this instance* so that its image/language
  embeddings are noised with the DDPM forward process at sigma (:mod:`tmrl_vla.noise`);
* a forward hook on the action expert's time layer adds ``W (e(sigma) - e(0))``, a learned
  projection of a sinusoidal sigma embedding that is zero at sigma = 0 *for any W*, so a trained
  adapter at sigma = 0 is a plain LoRA policy that stock PEFT runs without our hooks.

Sigma and the context noise are passed explicitly per call and live on the wrapper only while that
call runs (never in globals). :meth:`CSPPolicy.unload` removes the hooks and the LoRA layers and
returns the untouched LeRobot policy.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from tmrl_vla.backends import PrefixSegments, VLABackend, backend_for
from tmrl_vla.csp import serialization
from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.sigma_embedding import SigmaEmbedding
from tmrl_vla.noise import check_sigma, forward_noise, linear_beta_schedule


@dataclass
class PrefixCache:
    """A clean prefix computed once per decision: reused for the RL features and for sampling."""

    args: tuple
    kwargs: dict
    outputs: tuple  # (embs, pad_masks, att_masks) of the clean, un-noised prefix


@dataclass
class _Conditioning:
    sigma: torch.Tensor  # (b,)
    context_noise: torch.Tensor | None  # (b, D) tiled, (b, n, D) per token, or None (sampled)
    generator: torch.Generator | None = None  # draws the sampled context noise (None: torch's global one)
    # The sigma embedding is the same at every flow step of one call: computed once, on first use.
    embedding: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.all_zero = bool((self.sigma == 0).all())  # sigma = 0 everywhere: both hooks pass through


class CSPPolicy(nn.Module):
    def __init__(self, peft_model: nn.Module, config: CSPConfig, backend: VLABackend, base_hash: str) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.config = config
        self.backend = backend
        self.base_hash = base_hash
        self.datasets: list[str] = []  # repo ids of the datasets it was trained on (its card's `datasets`)
        flow = self.flow_model
        self.embed_width = backend.embed_width(flow)
        self.sigma_embedding = SigmaEmbedding(config.sigma_embedding_dim, backend.expert_width(flow))
        self.register_buffer("schedule", linear_beta_schedule(config.num_timesteps, config.beta_start, config.beta_end))
        self._call: _Conditioning | None = None
        self._smoothing = True
        self._scale_recorder: dict[str, list[torch.Tensor]] | None = None
        self._prefix_cache: PrefixCache | None = None
        self._handles: list = []
        self._fused: list = []  # (parent, name, LoRA wrapper) swapped out by merge_adapter()
        self._install_hooks()

    # ---------------------------------------------------------------------------------- building
    @classmethod
    def from_base(cls, policy: nn.Module, config: CSPConfig | None = None) -> CSPPolicy:
        """Wrap a LeRobot policy (modified in place, as PEFT does; :meth:`unload` undoes it)."""
        config = config or CSPConfig()
        backend = backend_for(policy)
        if config.noise_state and not backend.has_state_token:
            raise ValueError(
                f"noise_state=True, but {backend.policy_type} has no state token in its prefix (the state reaches the "
                "action expert another way), so it cannot be noised there."
            )
        base_hash = serialization.weights_hash(policy)
        lora = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules or backend.default_lora_targets(),
        )
        for p in policy.parameters():
            p.requires_grad_(False)
        return cls(get_peft_model(policy, lora), config, backend, base_hash)

    @classmethod
    def from_pretrained(
        cls, path_or_repo_id: str | Path, *, base: nn.Module | None = None, is_trainable: bool = False
    ) -> CSPPolicy:
        """Load an adapter (a directory or Hub repo id) onto ``base``, or onto the base it names (repo id and
        revision, or path); the base's weights must be the ones it was trained on (checked by hash)."""
        return serialization.load_adapter(cls, path_or_repo_id, base, is_trainable)

    def save_pretrained(self, directory: str | Path, *, repo_id: str | None = None) -> Path:
        """Write a PEFT adapter directory plus ``csp_config.json``, the sigma embedding and a card
        (:mod:`tmrl_vla.csp.serialization`)."""
        return serialization.save_adapter(self, directory, repo_id=repo_id)

    def push_to_hub(self, repo_id: str, *, private: bool | None = None) -> str:
        """Upload the adapter directory (with its card) to the Hugging Face Hub as one commit."""
        return serialization.push_adapter(self, repo_id, private=private)

    @property
    def base_policy(self) -> nn.Module:
        """The LeRobot policy inside (with LoRA layers injected while wrapped)."""
        return self.peft_model.get_base_model()

    @property
    def flow_model(self) -> nn.Module:
        return self.backend.flow_model(self.base_policy)

    def _install_hooks(self) -> None:
        flow = self.flow_model
        method = self.backend.prefix_method
        original = getattr(flow, method)

        def embed_prefix_with_noise(*args, **kwargs):
            cache = self._prefix_cache
            outputs = cache.outputs if cache is not None else original(*args, **kwargs)
            if cache is not None:
                args, kwargs = cache.args, cache.kwargs
            return self._noise_prefix(flow, args, kwargs, outputs)

        setattr(flow, method, embed_prefix_with_noise)  # instance attribute: shadows the class method
        self._handles.append(("attr", flow, method))
        hook = self.backend.time_layer(flow).register_forward_hook(self._add_sigma_embedding)
        self._handles.append(("hook", hook))

    def _remove_hooks(self) -> None:
        for entry in self._handles:
            if entry[0] == "attr":
                _, obj, name = entry
                if name in vars(obj):
                    delattr(obj, name)
            else:
                entry[1].remove()
        self._handles = []

    def unload(self) -> nn.Module:
        """Remove hooks and LoRA layers; return the LeRobot policy exactly as it was given."""
        self.unmerge_adapter()
        self._remove_hooks()
        policy = self.peft_model.unload()
        return policy

    def merge_adapter(self) -> CSPPolicy:
        """Fold the LoRA weights into the adapted layers for frozen use (TMRL, evaluation, serving).

        Unmerged, every adapted Linear runs two extra small matmuls per call, and even merged, PEFT's
        wrapper adds a Python call per layer; on a small model whose latency is per-op overhead that
        cost 27% and 10% at batch 1 (eval/bench_overhead.py). So the weights are merged (PEFT's own
        merge) and each LoRA wrapper is swapped for its merged base layer; only our two hooks remain.
        The swap is reversible: :meth:`unmerge_adapter` puts the wrappers back and unmerges (exact up
        to the float rounding of add-then-subtract); saving while merged writes the unchanged LoRA
        weights; ``forward`` refuses to train a merged adapter.
        """
        if self._fused:
            return self

        self.peft_model.merge_adapter()
        for name, module in list(self.peft_model.named_modules()):
            if isinstance(module, BaseTunerLayer) and hasattr(module, "base_layer"):
                parent_name, _, child = name.rpartition(".")
                self._fused.append((self.peft_model.get_submodule(parent_name), child, module))
        self._remove_hooks()  # the sigma hook sits on an adapted layer: reinstall it on what takes its place
        self._place_lora_wrappers(False)
        self._install_hooks()
        return self

    def unmerge_adapter(self) -> CSPPolicy:
        if not self._fused:
            return self
        self._remove_hooks()
        self._place_lora_wrappers(True)
        self._fused = []
        self._install_hooks()
        self.peft_model.unmerge_adapter()
        return self

    def _place_lora_wrappers(self, wrapped: bool) -> None:
        """Put each swapped-out PEFT wrapper (``wrapped``) or its merged base layer into the model."""
        for parent, child, module in self._fused:
            setattr(parent, child, module if wrapped else module.base_layer)

    @contextlib.contextmanager
    def lora_wrappers_in_place(self) -> Iterator[None]:
        """Inside the block PEFT's LoRA wrappers are in the model even while merged (for saving)."""
        self._place_lora_wrappers(True)
        try:
            yield
        finally:
            self._place_lora_wrappers(False)

    @property
    def merged(self) -> bool:
        return bool(self._fused)

    # ------------------------------------------------------------------------------------- hooks
    def _noise_prefix(self, flow: nn.Module, args: tuple, kwargs: dict, outputs: tuple):
        if self._scale_recorder is not None:
            self._record_scales(flow, args, kwargs, outputs)
        call = self._call
        if call is None or not self._smoothing or call.all_zero:
            return outputs
        embs, pad_masks, att_masks = outputs
        segments = self.backend.segments(flow, args, kwargs, outputs)
        mask = torch.zeros_like(pad_masks)
        scale = torch.zeros(pad_masks.shape, dtype=embs.dtype, device=embs.device)
        for name, flag in (
            ("image", self.config.noise_image),
            ("language", self.config.noise_language),
            ("state", self.config.noise_state),
        ):
            seg = getattr(segments, name)
            if flag:
                mask = mask | seg
            scale = scale + seg.to(embs.dtype) * self._segment_scale(name)
        eps = self._context_eps(call.context_noise, embs, call.generator)
        if self.config.noise_scale == "segment":
            eps = eps * scale[..., None]
        noised = forward_noise(embs, call.sigma.to(embs.device), self.schedule, eps, mask)
        return noised, pad_masks, att_masks

    def _segment_scale(self, name: str) -> float:
        if self.config.noise_scale == "none":
            return 1.0
        noised = getattr(self.config, f"noise_{name}")
        if name not in self.config.segment_scale:
            if noised:
                raise RuntimeError(
                    f"CSP noise_scale='segment' but no scale is known for the {name!r} tokens: run "
                    "calibrate_segment_scales(batches) before training (the scale is saved with the adapter)."
                )
            return 0.0
        return float(self.config.segment_scale[name])

    def _context_eps(
        self, context_noise: torch.Tensor | None, embs: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        b, n, d = embs.shape
        if context_noise is None:
            tiled = self.config.context_noise == "tiled"
            shape = (b, 1, d) if tiled else (b, n, d)
            # drawn where the generator lives (a CPU generator cannot fill a CUDA tensor), then moved
            device = generator.device if generator is not None else embs.device
            eps = torch.randn(shape, generator=generator, device=device, dtype=embs.dtype).to(embs.device)
            return eps.expand(b, n, d)
        context_noise = context_noise.to(device=embs.device, dtype=embs.dtype)
        if context_noise.ndim == 2:  # one vector per sample, tiled over the context tokens
            return context_noise[:, None, :].expand(b, n, d)
        if context_noise.shape != (b, n, d):
            raise ValueError(f"per-token context noise must have shape {(b, n, d)}, got {tuple(context_noise.shape)}")
        return context_noise

    def _add_sigma_embedding(self, module: nn.Module, inputs: tuple, output: torch.Tensor):
        call = self._call
        if call is None or call.all_zero:
            return output
        if call.embedding is None:
            call.embedding = self.sigma_embedding(call.sigma.to(output.device))  # (b, W)
        emb = call.embedding.to(output.dtype)
        return output + emb.view(emb.shape[0], *([1] * (output.ndim - 2)), emb.shape[-1])

    # ------------------------------------------------------------------------------ conditioning
    @contextlib.contextmanager
    def conditioned(
        self,
        sigma: torch.Tensor | float,
        batch_size: int,
        context_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ):
        """Run the wrapped policy at per-sample ``sigma`` (b,) for the duration of the block.

        ``generator`` draws the context noise when ``context_noise`` is None (torch's global
        generator when it is None too)."""
        if not isinstance(sigma, torch.Tensor):
            sigma = torch.full((batch_size,), float(sigma))
        sigma = check_sigma(sigma, batch_size)
        if context_noise is not None and (
            context_noise.shape[0] != batch_size or context_noise.shape[-1] != self.embed_width
        ):
            raise ValueError(
                f"context noise must be (b, D) or (b, n, D) with b = {batch_size} and the policy's embedding "
                f"width D = {self.embed_width}; got {tuple(context_noise.shape)}"
            )
        previous, self._call = self._call, _Conditioning(sigma=sigma, context_noise=context_noise, generator=generator)
        try:
            yield
        finally:
            self._call = previous

    @contextlib.contextmanager
    def disable_smoothing(self) -> Iterator[None]:
        """Inside the block the context is never noised (the sigma embedding still applies)."""
        previous, self._smoothing = self._smoothing, False
        try:
            yield
        finally:
            self._smoothing = previous

    @contextlib.contextmanager
    def base_only(self) -> Iterator[None]:
        """Inside the block the LoRA layers are off; at sigma 0 (nothing is added to the context or to the time
        input) the wrapped policy is then the base policy exactly."""
        if self.merged:
            raise RuntimeError("the LoRA adapter is merged: call unmerge_adapter() before base_only()")
        with self.peft_model.disable_adapter():
            yield

    @contextlib.contextmanager
    def flow_draws(self, noise: torch.Tensor, time: torch.Tensor) -> Iterator[list[torch.Tensor]]:
        """Inside the block the flow's training forward uses this initial ``noise`` (b, chunk, max_action_dim)
        and flow ``time`` (b,) instead of drawing its own, and each forward's predicted velocity is appended
        to the list yielded: two policies can then be compared on the same noisy actions."""
        flow, velocities = self.flow_model, []

        def given_noise(shape, device):
            if tuple(shape) != tuple(noise.shape):
                raise ValueError(f"the flow draws noise of shape {tuple(shape)}, the given one is {tuple(noise.shape)}")
            return noise.to(device)

        flow.sample_noise = given_noise  # instance attributes shadow the class's methods, as the prefix hook does
        flow.sample_time = lambda bsize, device: time.to(device)
        hook = self.backend.velocity_layer(flow).register_forward_hook(lambda m, i, out: velocities.append(out))
        try:
            yield velocities
        finally:
            hook.remove()
            del flow.sample_noise, flow.sample_time

    @staticmethod
    def _batch_size(batch: dict) -> int:
        # pi0.5 never reads observation.state (its state is tokenised into the prompt), so a valid batch may lack
        # it; every LeRobot VLA batch carries the language tokens.
        for key in ("observation.state", "observation.language.tokens"):
            if key in batch:
                return int(batch[key].shape[0])
        raise KeyError("cannot tell the batch size: the batch has neither observation.state nor language tokens")

    @torch.no_grad()
    def encode_prefix(self, batch: dict) -> PrefixCache:
        """The clean prefix of a preprocessed batch (the vision encoder runs here, once per decision)."""
        args, kwargs = self.backend.prefix_inputs(self.base_policy, batch)
        flow = self.flow_model
        original = getattr(type(flow), self.backend.prefix_method).__get__(flow)  # the class method, unwrapped
        return PrefixCache(args=args, kwargs=kwargs, outputs=original(*args, **kwargs))

    def prefix_segments(self, cache: PrefixCache) -> PrefixSegments:
        """Which positions of a cached clean prefix are image, language and state tokens."""
        return self.backend.segments(self.flow_model, cache.args, cache.kwargs, cache.outputs)

    def predict_action_chunk(
        self,
        batch: dict,
        *,
        sigma: torch.Tensor | float,
        context_noise: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        prefix: PrefixCache | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """LeRobot's ``predict_action_chunk`` at per-sample ``sigma`` (b,) (a float applies to all).

        ``context_noise``: None samples it (per the config's mode) from ``generator`` (torch's global
        generator when None); a (b, D) tensor is one vector per sample tiled over all context tokens
        (what TMRL feeds); (b, n, D) is per token.
        ``noise``: the flow's initial noise (b, chunk, max_action_dim), as in LeRobot.
        ``prefix``: a clean prefix from :meth:`encode_prefix` of the same batch, reused instead of
        running the vision encoder again.
        """
        previous, self._prefix_cache = self._prefix_cache, prefix
        try:
            with self.conditioned(sigma, self._batch_size(batch), context_noise, generator):
                return self.base_policy.predict_action_chunk(batch, noise=noise)
        finally:
            self._prefix_cache = previous

    def forward(self, batch: dict, *, sigma: torch.Tensor, context_noise: torch.Tensor | None = None, **kwargs):
        """The policy's own training loss at per-sample ``sigma``; returns LeRobot's (loss, info)."""
        if torch.is_grad_enabled() and self.merged:
            raise RuntimeError("the LoRA adapter is merged for inference: call unmerge_adapter() before training")
        with self.conditioned(sigma, self._batch_size(batch), context_noise):
            return self.base_policy.forward(batch, **kwargs)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------------------ calibration
    def _record_scales(self, flow, args, kwargs, outputs) -> None:
        embs = outputs[0]
        segments = self.backend.segments(flow, args, kwargs, outputs)
        rms = embs.detach().float().pow(2).mean(-1).sqrt()  # (b, n)
        for name in ("image", "language", "state"):
            seg = getattr(segments, name)
            if seg.any():
                self._scale_recorder[name].append(rms[seg])

    @torch.no_grad()
    def calibrate_segment_scales(self, batches) -> dict[str, float]:
        """Measure each segment's mean clean-token RMS over ``batches`` (preprocessed training batches).

        Stored in the config (and so in ``csp_config.json``): at inference the same scale is used,
        whatever the batch, so sigma = 1 carries no information about the clean tokens.
        """
        self._scale_recorder = {"image": [], "language": [], "state": []}
        try:
            for batch in batches:
                self.base_policy.forward(batch)
        finally:
            recorded, self._scale_recorder = self._scale_recorder, None
        scales = {k: float(torch.cat(v).mean()) for k, v in recorded.items() if v}
        self.config = dataclasses.replace(self.config, segment_scale=scales)
        return scales
