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

Checkpoints (model, optimiser, scheduler, step, RNG) go to ``<out>/train_state.pt`` every
``save_every`` steps; calling :func:`train_bc` again on the same ``out`` resumes from there.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tmrl_vla.data.memory import InMemoryDemos
from tmrl_vla.schedules import warmup_cosine


@dataclass(frozen=True)
class BCConfig:
    steps: int = 3000
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05  # cosine decay ends at lr * min_lr_ratio
    grad_clip: float = 10.0
    seed: int = 0
    # Random-shift augmentation (pixels). Off by default: with a fixed camera the cube's absolute pixel
    # position *is* the target, and 0 vs 2 px measured the same in-distribution success (1.00 vs 0.98).
    image_shift: int = 0
    save_every: int = 500
    log_every: int = 100
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
    dataset_repo_id: str,
    dataset_root: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    log=print,
) -> dict:
    """Train the tiny SmolVLA on the demos at ``dataset_root``; write a LeRobot checkpoint to ``out_dir``.

    Returns training metrics (final loss, steps/s, wall time).
    """
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)

    demos = InMemoryDemos(dataset_repo_id, dataset_root, chunk_size=config.policy.get("chunk_size", 10))
    if not demos.image_keys:
        raise ValueError(f"dataset at {dataset_root} has no image features; the policy needs at least one camera")
    image_size = demos.images[demos.image_keys[0]].shape[-1]
    policy = make_tiny_smolvla(
        image_keys=tuple(demos.image_keys),
        image_size=image_size,
        state_dim=demos.state.shape[1],
        action_dim=demos.action.shape[1],
        **config.policy,
    )
    preprocessor, postprocessor = make_pre_post_processors(policy.config, dataset_stats=demos.stats)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = warmup_cosine(config.warmup_steps, config.steps, config.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed)

    state_path = out_dir / "train_state.pt"
    step = 0
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        policy.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = state["step"]
        log(f"[bc] resuming from step {step}")

    policy.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="BC", unit="step", disable=not progress)
    while step < config.steps:
        index = torch.randint(0, len(demos), (config.batch_size,), generator=generator)
        batch = demos.batch(index)
        for key in demos.image_keys:
            batch[key] = random_shift(batch[key], config.image_shift, generator)
        batch = preprocessor(batch)
        loss, _ = policy.forward(batch)
        if not torch.isfinite(loss):
            _save_state(state_path, policy, optimizer, scheduler, generator, step)
            raise FloatingPointError(f"BC loss is {loss.item()} at step {step}; state saved to {state_path}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        losses.append(loss.item())
        bar.update(1)
        if step % config.log_every == 0:
            bar.set_postfix(loss=f"{sum(losses[-config.log_every :]) / config.log_every:.4f}")
        if step % config.save_every == 0 and step < config.steps:
            _save_state(state_path, policy, optimizer, scheduler, generator, step)
    bar.close()
    seconds = time.perf_counter() - start

    policy.save_pretrained(out_dir)
    preprocessor.save_pretrained(out_dir)
    postprocessor.save_pretrained(out_dir)
    state_path.unlink(missing_ok=True)
    tail = losses[-min(len(losses), 100) :] or [float("nan")]
    return {
        "bc_config": asdict(config),
        "final_loss": sum(tail) / len(tail),
        "steps_run": len(losses),
        "train_seconds": seconds,
        "steps_per_second": len(losses) / seconds if seconds > 0 else float("nan"),
    }


def _save_state(path: Path, policy, optimizer, scheduler, generator, step: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "model": policy.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
        },
        tmp,
    )
    os.replace(tmp, path)
