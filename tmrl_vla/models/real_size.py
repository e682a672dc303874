"""Real-size LeRobot VLAs with random weights, built offline: the full SmolVLA, pi0 and pi0.5.

Why: every latency and memory number so far came from the 1M-parameter tiny SmolVLA, where per-op
Python overhead dominates. Whether CSP's hooks and TMRL's decision stay cheap must also be measured
where the matmuls dominate, at the sizes people fine-tune, but their checkpoints are Hub downloads.
Latency and memory do not depend on the weights' values, so random weights in the real shapes are
enough:

* SmolVLA: LeRobot's ``SmolVLAPolicy`` with its *default* config (``num_vlm_layers=16``, expert
  width 0.75, 512 px images, chunk 50, 10 flow steps), on ``SMOLVLM2_500M_DIR``: a backbone
  directory in the shape of ``HuggingFaceTB/SmolVLM2-500M-Video-Instruct`` (written by
  :func:`write_smolvlm2_500m` through the tiny backbone's own generator,
  :mod:`tmrl_vla.models.make_tiny_vlm`). Only the shape numbers are the real model's; the tokenizer
  is the tiny one (SmolVLA only turns the task into token ids, all < the real vocabulary of 49280).
* pi0 / pi0.5: LeRobot's ``PI0Policy`` / ``PI05Policy`` with their default variants (PaliGemma
  ``gemma_2b`` + SigLIP so400m at 224 px, ``gemma_300m`` action expert). They need no backbone
  directory; their tokenizer (PaliGemma's) is a Hub download, so callers feed token ids directly
  (:func:`pi_batch`).

Sources of the SmolVLM2-500M numbers (checked, not copied): the model's ``processor_config.json``
on the Hub (``image_seq_len`` 64, i.e. (512 / 16 / 4)^2: patch 16 at 512 px with scale factor 4),
the ``config.json`` of ``vidore/ColSmolVLM-Instruct-500M-base`` (the same SmolVLM-500M backbone:
text hidden 960, intermediate 2560, 15 heads, 5 kv heads, head_dim 64, scale_factor 4), the
SmolVLM 256M/500M blog post (SigLIP base patch-16/512, 93M parameters; SmolLM2-360M text model:
32 layers, vocab 49280) and transformers' SmolVLM docs. The parameter count of the resulting
SmolVLA, ~450M, matches the SmolVLA paper's "450M" (tests/models/test_real_size.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import torch
from lerobot.configs import FeatureType, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_LANGUAGE_ATTENTION_MASK, OBS_LANGUAGE_TOKENS, OBS_STATE
from torch import nn

from tmrl_vla.models.make_tiny_vlm import TinyVlmSpec, TowerSpec, render_files

RealModel = Literal["smolvla", "pi0", "pi05"]
REAL_MODELS: tuple[str, ...] = ("smolvla", "pi0", "pi05")

SMOLVLM2_500M_SPEC = TinyVlmSpec(
    image_size=512,
    patch_size=16,
    scale_factor=4,
    vision=TowerSpec(hidden_size=768, intermediate_size=3072, layers=12, heads=12),  # SigLIP base patch16/512
    text=TowerSpec(hidden_size=960, intermediate_size=2560, layers=32, heads=15),  # SmolLM2-360M
    text_kv_heads=5,
    max_position_embeddings=8192,
)
"""SmolVLM2-500M-Video-Instruct's shape, in the tiny generator's terms (head_dim = 960 / 15 = 64)."""

SMOLVLM2_500M_VOCAB_SIZE = 49280  # SmolLM2's 49152 tokens plus SmolVLM's image/video tokens
SMOLVLM2_500M_ROPE_THETA = 100000.0  # SmolLM2-360M's RoPE base (SmolVLA applies its own RoPE anyway)

SMOLVLM2_500M_DIR: Path = Path(str(resources.files("tmrl_vla.models").joinpath("smolvlm2_500m")))
"""Packaged SmolVLM2-500M-shaped backbone directory (config, tiny tokenizer, processor; no weights)."""

CAMERA = "observation.images.front"
STATE_DIM = ACTION_DIM = 6
SMOLVLA_CAMERA_SHAPE = (3, 480, 640)  # a common robot camera; SmolVLA resizes it with padding to 512 x 512
PI_CAMERA_SHAPE = (3, 224, 224)  # pi0 / pi0.5's image_resolution: no resize


# ------------------------------------------------------------------------------ SmolVLM2-500M directory
def render_smolvlm2_500m_files() -> dict[str, str]:
    """``{file name: text}`` of the SmolVLM2-500M-shaped directory (pure; writes nothing).

    The tiny generator writes the shapes, the processor configs (``image_seq_len`` 64, 512 px) and
    the tokenizer; the text model's vocabulary is then widened to the real 49280 rows (the tiny
    generator sizes it to its own tokenizer) and its RoPE base set to the real one.
    """
    files = render_files(SMOLVLM2_500M_SPEC)
    config = json.loads(files["config.json"])
    config["text_config"]["vocab_size"] = SMOLVLM2_500M_VOCAB_SIZE
    config["text_config"]["rope_parameters"]["rope_theta"] = SMOLVLM2_500M_ROPE_THETA
    files["config.json"] = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return files


def write_smolvlm2_500m(out_dir: Path | str = SMOLVLM2_500M_DIR) -> list[Path]:
    """Write the directory to ``out_dir`` (created if needed); return the written paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_smolvlm2_500m_files().items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


# --------------------------------------------------------------------------------------- builders
def _features(camera_shape: tuple[int, int, int]) -> tuple[dict[str, PolicyFeature], dict[str, PolicyFeature]]:
    """(input features, output features): one camera, a 6-D state, a 6-D action (as the tiny default)."""
    inputs = {
        CAMERA: PolicyFeature(type=FeatureType.VISUAL, shape=camera_shape),
        OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,)),
    }
    return inputs, {ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))}


def smolvla_config(device: str = "cpu", **overrides: Any):
    """LeRobot's default ``SmolVLAConfig`` on the SmolVLM2-500M-shaped directory (random init,
    ``load_vlm_weights=False``, its default), one camera, 6-D state and action."""
    from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

    inputs, outputs = _features(SMOLVLA_CAMERA_SHAPE)
    fields: dict[str, Any] = {
        "vlm_model_name": str(SMOLVLM2_500M_DIR),
        "load_vlm_weights": False,
        "input_features": inputs,
        "output_features": outputs,
        "device": device,
        "push_to_hub": False,
    }
    fields.update(overrides)
    return SmolVLAConfig(**fields)


def pi_config(kind: Literal["pi0", "pi05"], device: str = "cpu", dtype: str = "float32", **overrides: Any):
    """LeRobot's default ``PI0Config`` / ``PI05Config`` (gemma_2b + gemma_300m, 224 px), one camera.
    ``dtype`` is LeRobot's own precision switch: "bfloat16" keeps the vision path in float32."""
    if kind == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as Config
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as Config
    inputs, outputs = _features(PI_CAMERA_SHAPE)
    fields: dict[str, Any] = {
        "device": device,
        "dtype": dtype,
        "input_features": inputs,
        "output_features": outputs,
        "push_to_hub": False,
    }
    fields.update(overrides)
    return Config(**fields)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters are created in ``dtype`` inside the block (torch's default dtype, restored after)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _with_device(config, device: str):
    """``config`` with ``device`` set after LeRobot's validation, which knows no "meta" device."""
    config.device = device
    return config


def make_smolvla(device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The full SmolVLA (~450M parameters), randomly initialised, on ``device``.

    ``dtype`` bfloat16 casts the VLM (vision tower, connector, text layers) only, the mixed
    precision LeRobot's SmolVLA runs in when it loads pretrained VLM weights (``SmolVLMWithExpertModel``
    loads them in bfloat16 and builds the action expert and projections in float32; a whole-policy
    cast fails: ``denoise_step`` feeds float32 into ``action_out_proj``).
    """
    from lerobot.policies.smolvla.modeling_smolvla import SmolVLAPolicy

    policy = SmolVLAPolicy(_with_device(smolvla_config(), device))
    return policy if device == "meta" else smolvla_in_dtype(policy, dtype).to(device=device)


def smolvla_in_dtype(policy: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A SmolVLA policy (any size) with its VLM in ``dtype`` and the rest float32 (see :func:`make_smolvla`)."""
    policy.model.vlm_with_expert.vlm.to(dtype=dtype)
    return policy


def make_pi(kind: Literal["pi0", "pi05"], device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """pi0 / pi0.5 at real size (~4B parameters as LeRobot builds them), randomly initialised.

    LeRobot builds both Gemmas and SigLIP in float32 (their transformers configs say so, and
    ``from_config`` obeys) and, with ``dtype="bfloat16"``, casts afterwards: 16 GB of float32
    weights exist at once, more than this project's CPU machines can spare. With bfloat16 the two
    transformers models are therefore *created* in bfloat16 (:func:`_created_in`); LeRobot's own
    ``to_bfloat16_for_selected_params`` then moves the vision path and the norms back to float32
    as usual, so the end state is the one LeRobot's cast gives, at half the peak memory.
    """
    if kind == "pi0":
        from lerobot.policies.pi0 import modeling_pi0 as modeling
    else:
        from lerobot.policies.pi05 import modeling_pi05 as modeling
    policy_class = modeling.PI0Policy if kind == "pi0" else modeling.PI05Policy
    precision = "bfloat16" if dtype == torch.bfloat16 else "float32"
    config = _with_device(pi_config(kind, dtype=precision), device)
    if device == "meta":
        return policy_class(config)
    from transformers.initialization import no_init_weights

    with _created_in(modeling, dtype), no_init_weights():
        policy = policy_class(config)
    return fill_uniform(policy)


def fill_uniform(module: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Every parameter drawn uniformly with standard deviation ``std``, in place.

    Why not the models' own initialisers: on 2 CPU cores they take over 5 minutes for pi0's 4B
    parameters (torch's kaiming init, then transformers' normal init of every Linear again, in
    bfloat16), while latency and memory do not depend on the values as long as they are finite;
    one seeded uniform fill takes seconds. It runs on a model built under transformers'
    ``no_init_weights`` (parameters left uninitialised; buffers such as RoPE frequencies are
    computed in the constructors, not by the initialisers, so they stay right). Norm scales get
    small values too, which keeps activations finite; pi0.5's adaptive-norm modulation, zero at
    LeRobot's init, becomes non-zero, as in a trained checkpoint.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    bound = std * 3**0.5
    with torch.no_grad():
        for param in module.parameters():
            if param.device.type == "cpu":
                param.uniform_(-bound, bound, generator=generator)
            else:
                param.copy_(torch.empty(param.shape, dtype=param.dtype).uniform_(-bound, bound, generator=generator))
    return module


@contextlib.contextmanager
def _created_in(modeling: Any, dtype: torch.dtype) -> Iterator[None]:
    """Inside the block, the PaliGemma and Gemma-expert classes that ``modeling`` (LeRobot's pi0 or
    pi0.5 module) looks up while building create their parameters in ``dtype``: their configs' dtype
    (which transformers' ``from_config`` applies to the sub-models) and torch's default dtype are
    set to it. Module attributes are swapped and restored, as tests/backends/test_pi_backends.py
    shrinks these models; no library code is edited."""
    if dtype == torch.float32:
        yield
        return
    originals = {
        name: getattr(modeling, name) for name in ("PaliGemmaForConditionalGenerationWithPiGemma", "PiGemmaForCausalLM")
    }

    def creating(cls):
        def build(config):
            for sub in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
                if sub is not None:
                    sub.dtype = dtype
            with default_dtype(dtype):
                return cls(config=config)

        return build

    try:
        for name, cls in originals.items():
            setattr(modeling, name, creating(cls))
        yield
    finally:
        for name, cls in originals.items():
            setattr(modeling, name, cls)


def make_real_policy(model: RealModel, device: str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    """The real-size policy named ``model`` ("smolvla", "pi0" or "pi05")."""
    if model not in REAL_MODELS:
        raise ValueError(f"unknown real-size model {model!r}; choose from {REAL_MODELS}")
    return make_smolvla(device, dtype) if model == "smolvla" else make_pi(model, device, dtype)


def parameter_count(model: RealModel) -> dict[str, int]:
    """Parameters of the real-size policy, counted on the ``meta`` device (nothing is allocated):
    ``{"total": n, "trainable": n}`` (trainable: what the default config leaves unfrozen)."""
    with torch.device("meta"):
        policy = make_real_policy(model, "meta")
    params = list(policy.parameters())
    return {"total": sum(p.numel() for p in params), "trainable": sum(p.numel() for p in params if p.requires_grad)}


# ---------------------------------------------------------------------------------------- batches
def smolvla_batch(policy: nn.Module, batch_size: int, *, generator: torch.Generator | None = None) -> dict:
    """One batch through LeRobot's own SmolVLA pre-processor (tokenises the task with the directory's
    tokenizer, normalises the state with zero-mean unit-std stats), on the policy's device."""
    from lerobot.policies.factory import make_pre_post_processors

    stats = {k: {"mean": torch.zeros(STATE_DIM), "std": torch.ones(STATE_DIM)} for k in (OBS_STATE, ACTION)}
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=stats)
    chunk = policy.config.chunk_size
    return pre(
        {
            CAMERA: torch.rand(batch_size, *SMOLVLA_CAMERA_SHAPE, generator=generator),
            OBS_STATE: torch.randn(batch_size, STATE_DIM, generator=generator),
            ACTION: torch.randn(batch_size, chunk, ACTION_DIM, generator=generator),
            "task": ["pick up the red cube and put it in the bin"] * batch_size,
        }
    )


def pi_batch(policy: nn.Module, batch_size: int, *, task_tokens: int = 12, generator=None) -> dict:
    """A pi0 / pi0.5 batch as LeRobot's pre-processor would leave it, without its Hub tokenizer:
    random token ids (PaliGemma vocabulary) right-padded to ``tokenizer_max_length`` (48 for pi0,
    200 for pi0.5, whose prompt also holds the state digits: ``task_tokens`` then counts those too)."""
    config = policy.config
    length = config.tokenizer_max_length
    vocab = policy.model.paligemma_with_expert.paligemma.config.text_config.vocab_size
    mask = torch.zeros(batch_size, length, dtype=torch.bool)
    mask[:, :task_tokens] = True
    device = next(policy.parameters()).device
    batch = {
        CAMERA: torch.rand(batch_size, *PI_CAMERA_SHAPE, generator=generator),
        OBS_STATE: torch.randn(batch_size, STATE_DIM, generator=generator),
        ACTION: torch.randn(batch_size, config.chunk_size, ACTION_DIM, generator=generator),
        OBS_LANGUAGE_TOKENS: torch.randint(1, vocab, (batch_size, length), generator=generator) * mask,
        OBS_LANGUAGE_ATTENTION_MASK: mask,
    }
    return {k: v.to(device) for k, v in batch.items()}


def real_batch(model: RealModel, policy: nn.Module, batch_size: int) -> dict:
    """A preprocessed batch for the real-size ``policy`` (SmolVLA: its own pre-processor; pi0/pi0.5:
    token ids directly, 12 for pi0's task, 40 for pi0.5's task and state digits)."""
    generator = torch.Generator().manual_seed(0)
    if model == "smolvla":
        return smolvla_batch(policy, batch_size, generator=generator)
    return pi_batch(policy, batch_size, task_tokens=12 if model == "pi0" else 40, generator=generator)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tmrl_vla.models.real_size [--out DIR]``: (re)write the SmolVLM2-500M directory."""
    parser = argparse.ArgumentParser(description="Write the SmolVLM2-500M-shaped backbone directory.")
    parser.add_argument("--out", type=Path, default=SMOLVLM2_500M_DIR)
    args = parser.parse_args(argv)
    paths = write_smolvlm2_500m(args.out)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
