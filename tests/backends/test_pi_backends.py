"""CSP on LeRobot's real ``PI0Policy`` and ``PI05Policy``, built offline at toy size.

The stock configs only offer the gemma_300m / gemma_2b variants and a 27-layer SigLIP, so the sizes are patched
*here*, at the three names ``PI0Pytorch`` / ``PaliGemmaWithExpertModel`` look up in their module while building
(``get_gemma_config`` and the two model classes, which get a shrunk config); no library code is edited. No pretrained
weights and no tokenizer are needed: the batch carries ``observation.language.tokens`` / ``attention_mask``
directly, as LeRobot's pre-processor would have produced them.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.policies.pi_gemma import PiGemmaRMSNorm
from torch import nn

from tmrl_vla.backends import backend_for
from tmrl_vla.backends.pi0 import PI0Backend
from tmrl_vla.backends.pi05 import PI05Backend
from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy

B, CHUNK, MAX_ACTION_DIM = 3, 10, 32
IMAGE_SIZE, PATCH = 32, 8
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2  # per camera
N_LANG, VOCAB = 12, 256
LANG_LENGTHS = torch.tensor([12, 7, 4])  # right-padded to N_LANG
VLM_LAYERS = 2


def _lerobot_modules(kind: str) -> tuple[Any, type, type]:
    """(modeling module, config class, policy class) of ``kind``."""
    if kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
        from lerobot.policies.pi0.configuration_pi0 import PI0Config

        return modeling, PI0Config, modeling.PI0Policy
    from lerobot.policies.pi05 import modeling_pi05 as modeling
    from lerobot.policies.pi05.configuration_pi05 import PI05Config

    return modeling, PI05Config, modeling.PI05Policy


def build_tiny_pi(kind: str) -> nn.Module:
    """A randomly initialised pi0 / pi0.5 with 2-layer Gemmas and a 1-layer SigLIP (~160k parameters).

    Both Gemmas need 8 heads of one width: ``compute_layer_complete`` runs one joint attention over the VLM and
    expert tokens and reshapes its output to ``8 * head_dim``.
    """
    modeling, config_class, policy_class = _lerobot_modules(kind)
    tiny = {
        "gemma_2b": modeling.GemmaConfig(
            width=64, depth=VLM_LAYERS, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=8
        ),
        "gemma_300m": modeling.GemmaConfig(
            width=32, depth=VLM_LAYERS, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8
        ),
    }
    paligemma_class, expert_class = modeling.PaliGemmaForConditionalGenerationWithPiGemma, modeling.PiGemmaForCausalLM

    def tiny_paligemma(config):
        # PaliGemmaWithExpertModel hard-codes SigLIP-so400m's MLP width and a 2048-wide projector; shrink the tower
        # and project to the (tiny) text width, and drop the 257k vocabulary (ids here are < VOCAB).
        vision = config.vision_config
        vision.hidden_size, vision.intermediate_size, vision.num_hidden_layers = 32, 64, 1
        vision.num_attention_heads, vision.patch_size = 2, PATCH
        config.projection_dim = vision.projection_dim = config.text_config.hidden_size
        config.text_config.vocab_size = VOCAB
        return paligemma_class(config)

    def tiny_expert(config):
        config.vocab_size = VOCAB  # the expert's embedding is discarded, but its lm_head would be 257k rows
        return expert_class(config)

    config = config_class(
        device="cpu",
        chunk_size=CHUNK,
        n_action_steps=5,
        image_resolution=(IMAGE_SIZE, IMAGE_SIZE),
        empty_cameras=1,  # a camera the batch never has: its image tokens are prefix padding
        input_features={
            "observation.images.front": PolicyFeature(type=FeatureType.VISUAL, shape=(3, IMAGE_SIZE, IMAGE_SIZE)),
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(6,)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(6,))},
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(modeling, "get_gemma_config", tiny.__getitem__)
        mp.setattr(modeling, "PaliGemmaForConditionalGenerationWithPiGemma", tiny_paligemma)
        mp.setattr(modeling, "PiGemmaForCausalLM", tiny_expert)
        policy = policy_class(config)
    # pi0.5's adaptive RMSNorms start with a zero modulation weight (``PiGemmaRMSNorm.__init__``), so in a fresh
    # model neither the flow time nor sigma can reach the expert; give them the non-zero weights a trained
    # checkpoint has.
    for module in policy.modules():
        if isinstance(module, PiGemmaRMSNorm) and module.dense is not None:
            nn.init.normal_(module.dense.weight, std=0.05)
    return policy


def make_batch(kind: str) -> dict[str, torch.Tensor]:
    """A training batch as LeRobot's pre-processor leaves it; pi0.5's has no ``observation.state`` (it reads none)."""
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(N_LANG)[None, :] < LANG_LENGTHS[:, None]
    batch = {
        "observation.images.front": torch.rand(B, 3, IMAGE_SIZE, IMAGE_SIZE, generator=g),
        "observation.language.tokens": torch.randint(1, VOCAB, (B, N_LANG), generator=g) * mask,
        "observation.language.attention_mask": mask,
        "action": torch.randn(B, CHUNK, 6, generator=g),
    }
    if kind == "pi0":
        batch["observation.state"] = torch.randn(B, 6, generator=g)
    return batch


@pytest.fixture(scope="module", params=["pi0", "pi05"])
def tiny_pi(request) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    return build_tiny_pi(request.param), make_batch(request.param)


@pytest.fixture
def fresh(tiny_pi) -> tuple[nn.Module, dict[str, torch.Tensor], torch.Tensor]:
    """(a private copy of the policy, the batch, the flow noise used for sampling)."""
    policy, batch = tiny_pi
    noise = torch.randn(B, CHUNK, MAX_ACTION_DIM, generator=torch.Generator().manual_seed(2))
    return copy.deepcopy(policy), dict(batch), noise


def sample(policy_like: nn.Module, batch: dict, noise: torch.Tensor, **kw) -> torch.Tensor:
    return policy_like.predict_action_chunk(dict(batch), noise=noise.clone(), **kw)


def unsmoothed() -> CSPConfig:
    return CSPConfig(noise_scale="none")  # raw unit noise: no calibration pass needed


def train_steps(csp: CSPPolicy, batch: dict, steps: int) -> set[str]:
    """Adam steps at mixed sigma; returns the names of parameters that ever got a non-zero gradient."""
    optimizer = torch.optim.Adam(csp.trainable_parameters(), lr=1e-2)
    got_gradient: set[str] = set()
    for _ in range(steps):
        loss, _ = csp.forward(dict(batch), sigma=torch.tensor([0.2, 0.6, 1.0]))
        optimizer.zero_grad()
        loss.backward()
        got_gradient |= {n for n, p in csp.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        optimizer.step()
    return got_gradient


def test_backend_is_registered_for_the_lerobot_type(tiny_pi):
    policy, _ = tiny_pi
    backend = backend_for(policy)
    assert type(backend) is {"pi0": PI0Backend, "pi05": PI05Backend}[policy.config.type]
    flow = backend.flow_model(policy)
    assert backend.embed_width(flow) == 64 and backend.expert_width(flow) == 32
    assert backend.time_layer(flow).out_features == backend.expert_width(flow)


def test_identical_at_sigma_zero_and_smoothed_at_one(fresh):
    policy, batch, noise = fresh
    expected = sample(copy.deepcopy(policy), batch, noise)
    csp = CSPPolicy.from_base(policy, unsmoothed())
    assert torch.equal(sample(csp, batch, noise, sigma=0.0), expected)
    assert not torch.allclose(sample(csp, batch, noise, sigma=1.0), expected)


def test_segments_label_image_and_language_tokens_never_padding(fresh):
    policy, batch, noise = fresh
    backend = backend_for(policy)
    flow = backend.flow_model(policy)
    calls = []
    original = flow.embed_prefix

    def recording(*args, **kwargs):
        outputs = original(*args, **kwargs)
        calls.append((args, kwargs, outputs))
        return outputs

    flow.embed_prefix = recording
    sample(policy, batch, noise)
    del flow.embed_prefix
    (args, kwargs, outputs), *_ = calls
    _, pad_masks, _ = outputs
    assert pad_masks.shape == (B, 2 * IMAGE_TOKENS + N_LANG)  # the real camera, the empty one, the language

    seg = backend.segments(flow, args, kwargs, outputs)
    assert torch.equal(seg.image.sum(1), torch.full((B,), IMAGE_TOKENS))
    assert seg.image[:, :IMAGE_TOKENS].all()  # the empty camera's tokens are padding
    assert torch.equal(seg.language.sum(1), LANG_LENGTHS)
    assert torch.equal(seg.language[:, -N_LANG:], batch["observation.language.attention_mask"])
    assert not seg.state.any()  # pi0: state is in the suffix; pi0.5: tokenised into the language
    assert not (seg.image & seg.language).any()
    assert torch.equal(seg.image | seg.language, pad_masks)  # every real token labelled, no padding

    # Through the wrapper: at sigma = 1 exactly the labelled positions are noised.
    csp = CSPPolicy.from_base(policy, unsmoothed())
    clean = outputs[0]
    with csp.conditioned(1.0, B):
        noised, *_ = flow.embed_prefix(*args, **kwargs)
    assert torch.equal((noised != clean).any(-1), pad_masks)


def test_training_step_changes_only_adapter_and_sigma_embedding(fresh):
    policy, batch, _ = fresh
    csp = CSPPolicy.from_base(policy, unsmoothed())
    adapted = {n.removesuffix(".lora_A.default.weight") for n, _ in csp.named_parameters() if ".lora_A." in n}
    assert any(".language_model.layers." in n for n in adapted) and any(".gemma_expert." in n for n in adapted)
    assert not any("vision_tower" in n for n in adapted)
    time_layer = {"pi0": ".model.action_time_mlp_in", "pi05": ".model.time_mlp_in"}[policy.config.type]
    assert any(n.endswith(time_layer) for n in adapted)

    before = {n: p.detach().clone() for n, p in csp.named_parameters()}
    trainable = {n for n, p in csp.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("sigma_embedding") for n in trainable)
    got_gradient = train_steps(csp, batch, steps=2)  # two steps: LoRA A only moves once B is non-zero
    changed = {n for n, p in csp.named_parameters() if not torch.equal(p, before[n])}
    assert changed == got_gradient and changed <= trainable
    assert "sigma_embedding.weight" in changed
    # Only the last VLM layer's query projection is unreachable: its prefix outputs feed nothing the loss reads.
    assert all(f".language_model.layers.{VLM_LAYERS - 1}.self_attn.q_proj." in n for n in trainable - changed)


def test_unload_gives_the_untouched_policy_back(fresh):
    policy, batch, noise = fresh
    reference = {k: v.clone() for k, v in policy.state_dict().items()}
    expected = sample(copy.deepcopy(policy), batch, noise)
    csp = CSPPolicy.from_base(policy, unsmoothed())
    train_steps(csp, batch, steps=1)
    back = csp.unload()
    assert back is policy
    assert "embed_prefix" not in vars(back.model)
    assert not csp.backend.time_layer(back.model)._forward_hooks
    assert back.state_dict().keys() == reference.keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in reference.items())
    assert torch.equal(sample(back, batch, noise), expected)


def test_noise_state_is_refused_where_there_is_no_state_token():
    from tmrl_vla.backends.pi0 import PI0Backend
    from tmrl_vla.backends.pi05 import PI05Backend

    assert not PI0Backend.has_state_token and not PI05Backend.has_state_token

    class Config:
        type = "pi0"

    class Fake(torch.nn.Module):
        config = Config()

    with pytest.raises(ValueError, match="no state token"):
        CSPPolicy.from_base(Fake(), CSPConfig(noise_state=True))
