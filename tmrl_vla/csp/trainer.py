"""CSP training: a LoRA adapter and the sigma embedding on a frozen LeRobot VLA, with accelerate.

The same code runs on one CPU process, several CPU processes (gloo) and several GPUs: accelerate
wraps the :class:`~tmrl_vla.csp.policy.CSPPolicy` in DDP and all-reduces the adapter gradients.
Each process samples its own batches (generator seeded with ``seed + rank``); calibration of the
noise scale uses the same batches on every rank, so every rank holds the same config.

Loss: the policy's own flow-matching loss at a per-sample sigma drawn independently of the flow
time (paper, section 2). Optionally (``distill_weight``) the clean share's samples also pull the
adapted policy's velocity at sigma 0 toward the frozen base's on the same noisy actions: the LoRA
weights change the policy at every sigma, sigma 0 included, and the demonstrations alone do not
pin down what the base did there. Logged per sigma bucket to see where imitation is kept.

The loop is :class:`~tmrl_vla.training.SupervisedLoop`: checkpoints (adapter, optimiser, scheduler,
step, every rank's data-sampler and torch RNG states) are written atomically to
``<out>/train_state.safetensors`` every ``save_every`` steps, and running again resumes there; metrics rows
go to ``<out>/metrics.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from lerobot.configs.default import DatasetConfig

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.data.memory import InMemoryDemos
from tmrl_vla.data.stream import LoaderConfig, StreamedDemos
from tmrl_vla.policies import check_dataset_fits, load_lerobot_policy
from tmrl_vla.training import StepOutput, SupervisedLoop, adamw_warmup_cosine, optimizer_update

SIGMA_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0001)


@dataclass(frozen=True)
class CSPTrainConfig:
    steps: int = 2000  # optimiser steps in all (a resumed run counts the steps done before)
    batch_size: int = 32  # samples per step and per process (each process draws its own batch)
    lr: float = 1e-3  # peak AdamW learning rate of the adapter and sigma embedding, after the warm-up
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    warmup_steps: int = 50  # linear warm-up, then cosine decay to 0.05 * lr at the last step
    grad_clip: float = 10.0  # max global L2 norm of the trainable gradients (adapter, sigma embedding)
    seed: int = 0  # seeds torch (adapter init), the sampler of process i (seed + i) and the calibration batches
    # sigma = u ** sigma_power with u ~ U[0, 1]; power 1 is the paper's uniform draw, > 1 puts more
    # mass at small sigma. Default 2, measured on the embedded default (2000 steps, 20 states x 8
    # rollouts of the moved-camera task): in-distribution success at sigma = 0 stayed 0.97 (BC 1.00)
    # against 0.90 with the uniform draw, for the same coverage gain (Success@8 0.50-0.65 at sigma
    # 0.25-0.5 vs BC 0.20).
    sigma_power: float = 2.0
    clean_fraction: float = 0.0  # this share of each batch (its first samples) gets sigma = 0: pure imitation
    # Weight of the squared distance between the adapted policy's velocity and the frozen base's (LoRA
    # off) at sigma 0, on the clean share's samples (same noise and flow time); needs clean_fraction > 0.
    # Logged as csp/distill; csp/loss is then the sum.
    distill_weight: float = 0.0
    # Batches whose token RMS per prefix segment sets the noise scale (noise_scale="segment" without
    # a fixed segment_scale); the same batches on every process.
    calibration_batches: int = 4
    # A resumable checkpoint every this many steps: <out>/train_state.safetensors, or with the train_csp recipe a
    # <out>/checkpoints/<step> directory whose pretrained_model/ is a loadable adapter.
    save_every: int = 500
    log_every: int = 50  # a metrics.jsonl row (mean loss since the last row, lr, loss per sigma bucket)
    num_threads: int | None = None  # torch intra-op threads; None keeps torch's default
    # Where batches come from. "stream": LeRobot's LeRobotDataset and DataLoader decode each batch's
    # frames (video or images; memory does not grow with the dataset), in LeRobot's resumable order.
    # "memory": every frame decoded once into memory (image datasets only; the embedded default's
    # demos), sampled with replacement - see docs/benchmarks.md for what it saves per step.
    data_loader: str = "stream"
    num_workers: int = 2  # DataLoader worker processes decoding frames (data_loader="stream")
    csp: CSPConfig = field(default_factory=CSPConfig)  # the adapter itself: LoRA, sigma embedding, noise scale

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if not 0.0 <= self.clean_fraction < 1.0:
            raise ValueError(f"clean_fraction must be in [0, 1), got {self.clean_fraction}")
        if self.distill_weight < 0 or (self.distill_weight > 0 and self.clean_fraction == 0):
            raise ValueError(
                f"distill_weight must be >= 0 and needs clean_fraction > 0 (its samples are the distilled ones); "
                f"got distill_weight={self.distill_weight}, clean_fraction={self.clean_fraction}"
            )
        if self.sigma_power <= 0:
            raise ValueError(f"sigma_power must be > 0, got {self.sigma_power}")
        if self.data_loader not in ("stream", "memory"):
            raise ValueError(f"data_loader must be 'stream' or 'memory', got {self.data_loader!r}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


def clean_count(batch_size: int, config: CSPTrainConfig) -> int:
    """How many of a batch's first samples get sigma = 0 (the clean share)."""
    return int(round(config.clean_fraction * batch_size))


def sample_sigma(batch_size: int, config: CSPTrainConfig, generator: torch.Generator) -> torch.Tensor:
    """Per-sample sigma (b,) in [0, 1], independent of the flow time."""
    sigma = torch.rand(batch_size, generator=generator) ** config.sigma_power
    n_clean = clean_count(batch_size, config)
    if n_clean:
        sigma[:n_clean] = 0.0
    return sigma


def bucket_losses(per_sample: torch.Tensor, sigma: torch.Tensor) -> dict[str, float]:
    """Mean loss per sigma bucket ``csp/loss_sigma_<lo>-<hi>`` (buckets without samples are omitted)."""
    out = {}
    for lo, hi in zip(SIGMA_BUCKETS[:-1], SIGMA_BUCKETS[1:], strict=True):
        sel = (sigma >= lo) & (sigma < hi)
        if sel.any():
            out[f"csp/loss_sigma_{lo:.2f}-{min(hi, 1.0):.2f}"] = float(per_sample[sel].mean())
    return out


def train_csp(
    config: CSPTrainConfig,
    *,
    base_policy_dir: str | Path,
    dataset: DatasetConfig,
    out_dir: str | Path,
    progress: bool = True,
    log=print,
    checkpoints: bool = False,
    on_row=None,
    on_export=None,
    base_revision: str | None = None,
) -> dict:
    """Train a CSP adapter for the LeRobot checkpoint ``base_policy_dir`` (a directory, or a Hub repo
    id at ``base_revision``).

    ``checkpoints=False``: the adapter is written to ``out_dir`` at the end (resumable state in
    ``out_dir/train_state.safetensors`` meanwhile). ``checkpoints=True``: LeRobot's layout, every checkpoint
    (the last one included) an ``out_dir/checkpoints/<step>/pretrained_model`` adapter, ``last``
    pointing at the newest. ``on_row(row)`` also receives each metrics row; ``on_export(dir)`` runs
    after each adapter is written there (e.g. to add the job's own config).
    """
    accelerator, out_dir = _make_accelerator(out_dir)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    log = log if accelerator.is_main_process else (lambda *_: None)
    policy, preprocessor, demos = _load_base_and_demos(accelerator, base_policy_dir, base_revision, dataset, config)
    csp, optimizer, scheduler = _make_adapter(config, policy, preprocessor, demos, log)
    csp.datasets = [dataset.repo_id]
    generator = torch.Generator().manual_seed(config.seed + accelerator.process_index)

    def write_adapter(directory: Path = out_dir) -> None:
        csp.save_pretrained(directory)
        (directory / "csp_train_config.json").write_text(json.dumps(asdict(config), indent=2, default=str))
        if on_export is not None:
            on_export(directory)

    loop = SupervisedLoop.for_config(
        "csp",
        out_dir,
        config,
        _state_io(accelerator, csp, optimizer, scheduler, generator),
        is_main=accelerator.is_main_process,
        barrier=accelerator.wait_for_everyone,
        progress=progress,
        log=log,
        checkpoints=checkpoints,
        export=write_adapter,
        **({"on_row": on_row} if on_row is not None else {}),
    )
    loop.resume()  # before prepare: the state is loaded into the bare adapter and optimiser
    model, optimizer = accelerator.prepare(csp, optimizer)
    model.train()
    clip = lambda: accelerator.clip_grad_norm_(csp.trainable_parameters(), config.grad_clip)  # noqa: E731
    update = optimizer_update(optimizer, scheduler, clip, backward=accelerator.backward)
    next_batch = _batches(config, demos, generator, loop.step, accelerator)
    compute_loss = _batch_loss(config, next_batch, preprocessor, model, generator, accelerator.device, csp)
    finalize = (lambda: None) if checkpoints else write_adapter
    result = loop.run(compute_loss, update, lr=lambda: scheduler.get_last_lr()[0], finalize=finalize)
    return {
        "csp_train_seconds": result.seconds,
        "csp_steps_per_second": len(result.losses) / result.seconds if result.seconds > 0 else float("nan"),
        "num_processes": accelerator.num_processes,
        "steps": loop.step,
        "segment_scale": csp.config.segment_scale,
        "csp": csp,
    }


def _make_accelerator(out_dir: str | Path):
    """``(accelerator, out_dir)``; the folder is made once the inputs are checked (by the loop)."""
    # Some adapter weights get no gradient (e.g. LoRA on the VLM's last query projection, whose
    # output SmolVLA never reads), which DDP must be told about.
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    return accelerator, Path(out_dir)


def _batches(config: CSPTrainConfig, demos, generator: torch.Generator, start_step: int, accelerator):
    """``next_batch()``: this process's raw training batch of the next step."""
    if config.data_loader == "memory":  # frames drawn with replacement by this process's generator
        return lambda: demos.batch(torch.randint(0, len(demos), (config.batch_size,), generator=generator))
    stream = demos.batches(start_step=start_step, num_processes=accelerator.num_processes, prepare=accelerator.prepare)
    return lambda: next(stream)


def _batch_loss(config: CSPTrainConfig, next_batch, preprocessor, model, generator: torch.Generator, device, csp):
    """The loop's ``compute_loss``: this process's batch at per-sample sigmas, through the (DDP) model
    ``model`` wrapping ``csp``."""

    def compute_loss() -> StepOutput:
        batch = preprocessor(next_batch())
        b = batch["action"].shape[0]
        sigma = sample_sigma(b, config, generator).to(device)
        if config.distill_weight == 0:
            per_sample, _ = model(batch, sigma=sigma, reduction="none")
            return StepOutput(per_sample.mean(), lambda: bucket_losses(per_sample.detach().cpu(), sigma.cpu()))
        noise = torch.randn(csp.backend.action_noise_shape(csp.base_policy, b), generator=generator).to(device)
        time = csp.flow_model.sample_time(b, device)  # the family's own flow-time distribution
        with csp.flow_draws(noise, time) as adapted:
            per_sample, _ = model(batch, sigma=sigma, reduction="none")
        distill = distill_loss(csp, batch, clean_count(b, config), noise, time, adapted[-1])
        loss = per_sample.mean() + config.distill_weight * distill

        def metrics() -> dict[str, float]:
            return {**bucket_losses(per_sample.detach().cpu(), sigma.cpu()), "csp/distill": float(distill.detach())}

        return StepOutput(loss, metrics)

    return compute_loss


def distill_loss(csp, batch: dict, n: int, noise: torch.Tensor, time: torch.Tensor, velocity: torch.Tensor):
    """Mean squared distance, over the batch's first ``n`` samples (the clean share, at sigma 0) and the
    real action dimensions, between ``velocity`` (the adapted policy's, on ``noise`` and ``time``) and
    the frozen base's on the same inputs."""
    b = batch["action"].shape[0]
    head = {k: v[:n] if isinstance(v, (torch.Tensor, list)) and len(v) == b else v for k, v in batch.items()}
    with torch.no_grad(), csp.base_only(), csp.flow_draws(noise[:n], time[:n]) as base:
        csp(head, sigma=torch.zeros(n, device=noise.device), reduction="none")
    action_dim = batch["action"].shape[-1]
    return (velocity[:n, :, :action_dim] - base[-1][..., :action_dim]).pow(2).mean()


def _load_base_and_demos(accelerator, base: str | Path, revision: str | None, dataset: DatasetConfig, config):
    """``(policy, preprocessor, demos)``: the base policy on this process's device and the demos it
    trains on, checked to fit each other before anything is trained or written."""
    device = "cpu" if accelerator.device.type == "cpu" else str(accelerator.device)  # safetensors rejects "cpu:0"
    policy, preprocessor, _ = load_lerobot_policy(base, device=device, revision=revision)
    if config.data_loader == "memory":
        if dataset.image_transforms.enable:
            raise ValueError("image transforms need data_loader='stream' (the in-memory path applies none)")
        demos = InMemoryDemos(dataset.repo_id, dataset.root, chunk_size=policy.config.chunk_size)
    else:
        loader = LoaderConfig(batch_size=config.batch_size, num_workers=config.num_workers, seed=config.seed)
        demos = StreamedDemos(dataset, policy.config, loader)
    check_dataset_fits(policy.config, preprocessor, demos.meta, f"{dataset.repo_id} ({dataset.root or 'Hub'})")
    return policy, preprocessor, demos


def _make_adapter(config: CSPTrainConfig, policy, preprocessor, demos, log):
    """``(csp, optimizer, scheduler)``: the adapter on ``policy`` (initialised from ``config.seed``),
    its noise scale calibrated, and the optimiser of its trainable parameters."""
    torch.manual_seed(config.seed)
    csp = CSPPolicy.from_base(policy, config.csp)
    _calibrate(csp, preprocessor, demos, config, log)
    optimizer, scheduler = adamw_warmup_cosine(
        csp.trainable_parameters(), config.lr, config.weight_decay, config.warmup_steps, config.steps
    )
    return csp, optimizer, scheduler


def _calibrate(csp, preprocessor, demos, config: CSPTrainConfig, log) -> None:
    """Measure the token RMS per prefix segment (the noise scale) unless the config fixes it.

    The calibration batches are drawn from their own generator, the same on every rank, so every
    rank ends with the same scales; they are drawn even when unused, as they always were.
    """
    calib = torch.Generator().manual_seed(config.seed + 10_000)
    batches = [
        preprocessor(demos.batch(torch.randint(0, len(demos), (config.batch_size,), generator=calib)))
        for _ in range(config.calibration_batches)
    ]
    if config.csp.noise_scale == "segment" and not config.csp.segment_scale:
        scales = csp.calibrate_segment_scales(batches)
        log(f"[csp] token RMS per segment: {json.dumps({k: round(v, 2) for k, v in scales.items()})}")


def _state_io(accelerator, csp, optimizer, scheduler, generator: torch.Generator):
    """``(get_state, set_state)`` of a CSP run: adapter weights, optimiser, scheduler, and every rank's
    sampler and torch RNG. ``get_state`` gathers the RNG states from all ranks (a collective: call it
    on every rank) and returns the state on the main process only."""
    rank = accelerator.process_index

    def get_state() -> dict | None:
        local = torch.cat([generator.get_state(), torch.get_rng_state()]).to(accelerator.device)
        everything = accelerator.gather(local[None]).cpu()  # (world, 2 * state_len)
        half = generator.get_state().numel()
        if not accelerator.is_main_process:
            return None
        return {
            "trainable": {n: p.detach().cpu().clone() for n, p in csp.named_parameters() if p.requires_grad},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generators": [row[:half].clone() for row in everything],
            "torch_rng": [row[half:].clone() for row in everything],
        }

    def set_state(state: dict) -> None:
        trainable = {n: p for n, p in csp.named_parameters() if p.requires_grad}
        for name, value in state["trainable"].items():
            trainable[name].data.copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generators"][rank])
        torch.set_rng_state(state["torch_rng"][rank])

    return get_state, set_state
