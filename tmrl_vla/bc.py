"""Behaviour cloning of a LeRobot policy on local demos; the output is a standard LeRobot checkpoint.

Why not ``lerobot-train``: it runs offline on our demos, but on this 2-core CPU it spent half of
each step decoding PNG frames, and the base-policy stage must fit in minutes. This trainer decodes
the dataset once (:class:`~tmrl_vla.data.memory.InMemoryDemos`) and otherwise does what LeRobot's
trainer does: LeRobot's own pre-processor (normalisation with the dataset's stats, tokenisation of
the task), the policy's own ``forward`` loss, AdamW with warm-up and cosine decay, gradient clipping.
What it writes (``config.json``, ``model.safetensors``, ``policy_preprocessor*``,
``policy_postprocessor*``) is what ``lerobot-train`` writes in ``pretrained_model/``, so
``SmolVLAPolicy.from_pretrained(dir)`` and ``make_pre_post_processors(cfg, pretrained_path=dir)``
load it like any user's pretrained VLA.

The loop is :class:`~tmrl_vla.training.SupervisedLoop`: checkpoints (model, optimiser, scheduler,
step, RNG) go to ``<out>/train_state.safetensors`` every ``save_every`` steps, and calling :func:`train_bc`
again on the same ``out`` resumes from there; ``bc/loss`` and ``bc/lr`` go to ``<out>/metrics.jsonl``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from lerobot.configs.default import DatasetConfig
from lerobot.policies.factory import make_pre_post_processors

from tmrl_vla.data.memory import InMemoryDemos
from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla
from tmrl_vla.training import LoopResult, StepOutput, SupervisedLoop, adamw_warmup_cosine, optimizer_update


@dataclass(frozen=True)
class BCConfig:
    steps: int = 3000  # optimiser steps in all (a resumed run counts the steps done before)
    batch_size: int = 32  # samples (frame + action chunk) per step, drawn uniformly with replacement
    lr: float = 5e-4  # peak AdamW learning rate, reached after the warm-up
    weight_decay: float = 1e-4  # AdamW's decoupled weight decay
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 10.0  # max global L2 norm of the gradients
    seed: int = 0  # seeds torch (weights init) and the batch/augmentation sampler
    # Random-shift augmentation (pixels). Off by default: with a fixed camera the cube's absolute pixel
    # position *is* the target, and 0 vs 2 px measured the same in-distribution success (1.00 vs 0.98).
    image_shift: int = 0
    save_every: int = 500  # checkpoint to <out>/train_state.safetensors every this many steps (resumable)
    log_every: int = 100  # a metrics.jsonl row (mean loss since the last row, lr) every this many steps
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default
    policy: dict[str, Any] = field(default_factory=dict)  # overrides for tiny_smolvla_config

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.image_shift < 0:
            raise ValueError(f"image_shift must be >= 0, got {self.image_shift}")


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ-style augmentation: pad by replication, crop back at a random offset per image.

    (b, c, h, w) -> (b, c, h, w). Done with two gathers so it stays one vectorised op per batch.
    """
    if pad == 0:
        return images
    b, c, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")  # (b, c, h+2p, w+2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, c, h, w + 2 * pad)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


def train_bc(
    config: BCConfig,
    *,
    dataset: DatasetConfig,
    out_dir: str | Path,
    progress: bool = True,
    log=print,
) -> dict:
    """Train the tiny SmolVLA on ``dataset`` (LeRobot's dataset config: ``repo_id`` and its local
    ``root``); write a LeRobot checkpoint to ``out_dir``.

    Returns training metrics (final loss, steps/s, wall time).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)

    demos = InMemoryDemos(dataset.repo_id, dataset.root, chunk_size=config.policy.get("chunk_size", 10))
    policy = _make_policy(config, demos, dataset.root)
    preprocessor, postprocessor = make_pre_post_processors(policy.config, dataset_stats=demos.stats)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_warmup_cosine(
        params, config.lr, config.weight_decay, config.warmup_steps, config.steps, config.min_lr_ratio
    )
    generator = torch.Generator().manual_seed(config.seed)
    state_io = _state_io(policy, optimizer, scheduler, generator)
    loop = SupervisedLoop.for_config("bc", out_dir, config, state_io, progress=progress, log=log)
    loop.resume()
    policy.train()
    update = optimizer_update(optimizer, scheduler, lambda: torch.nn.utils.clip_grad_norm_(params, config.grad_clip))

    def write_checkpoint() -> None:
        for part in (policy, preprocessor, postprocessor):
            part.save_pretrained(out_dir)

    compute_loss = _batch_loss(config, demos, policy, preprocessor, generator)
    result = loop.run(compute_loss, update, lr=lambda: scheduler.get_last_lr()[0], finalize=write_checkpoint)
    return _summary(config, result)


def _summary(config: BCConfig, result: LoopResult) -> dict:
    """What :func:`train_bc` returns: the config, the mean of the last 100 losses, the speed of this call."""
    tail = result.losses[-min(len(result.losses), 100) :] or [float("nan")]
    return {
        "bc_config": asdict(config),
        "final_loss": sum(tail) / len(tail),
        "steps_run": len(result.losses),
        "train_seconds": result.seconds,
        "steps_per_second": len(result.losses) / result.seconds if result.seconds > 0 else float("nan"),
    }


def _batch_loss(config: BCConfig, demos: InMemoryDemos, policy, preprocessor, generator: torch.Generator):
    """The loop's ``compute_loss``: a random batch, shifted images, the policy's own loss."""

    def compute_loss() -> StepOutput:
        index = torch.randint(0, len(demos), (config.batch_size,), generator=generator)
        batch = demos.batch(index)
        for key in demos.image_keys:
            batch[key] = random_shift(batch[key], config.image_shift, generator)
        loss, _ = policy.forward(preprocessor(batch))
        return StepOutput(loss)

    return compute_loss


def _make_policy(config: BCConfig, demos: InMemoryDemos, dataset_root: str | Path):
    """A fresh tiny SmolVLA shaped for the demos' cameras, state and action (``config.policy`` overrides)."""
    if not demos.image_keys:
        raise ValueError(f"dataset at {dataset_root} has no image features; the policy needs at least one camera")
    return make_tiny_smolvla(
        image_keys=tuple(demos.image_keys),
        image_size=demos.images[demos.image_keys[0]].shape[-1],
        state_dim=demos.state.shape[1],
        action_dim=demos.action.shape[1],
        **config.policy,
    )


def _state_io(policy, optimizer, scheduler, generator: torch.Generator):
    """``(get_state, set_state)`` of a BC run: model, optimiser, scheduler, sampler and torch RNG."""

    def get_state() -> dict:
        return {
            "model": policy.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def set_state(state: dict) -> None:
        policy.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])

    return get_state, set_state
