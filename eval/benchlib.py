"""Shared pieces of the benchmarks: the policy under test (``--model``), its copies and wrappers,
and interleaved timing.

``--model tiny`` (the default) is the embedded default's 1M-parameter SmolVLA; ``smolvla``, ``pi0``
and ``pi05`` are LeRobot's policies at their real sizes with random weights
(:mod:`tmrl_vla.models.real_size`): latency and memory do not depend on the weights' values. The
real sizes are only ever built behind that flag.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

MODELS = ("tiny", "smolvla", "pi0", "pi05")
STATE_DIM = 6  # every benchmark policy has a 6-D state and a 6-D action


@dataclass
class Setup:
    """The policy under test, one preprocessed batch for it and the flow's initial noise."""

    model: str
    policy: nn.Module
    batch: dict
    noise: torch.Tensor  # (b, chunk, max_action_dim) on the policy's device
    device: str
    dtype: str

    def describe(self) -> dict:
        """The run's model, device, dtype and size, for the JSON line."""
        params = sum(p.numel() for p in self.policy.parameters())
        return {"model": self.model, "device": self.device, "dtype": self.dtype, "parameters": params}


def run_settings(args, setup) -> dict:
    """What every latency benchmark's JSON line records of its run: repeats, batch, threads and the model."""
    return {"repeats": args.repeats, "batch": args.batch, "threads": args.threads, **setup.describe()}


def tiny_policy_and_batch(batch_size: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """A random tiny SmolVLA (latency does not depend on the weights) and one preprocessed batch."""
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.models.real_size import smolvla_in_dtype
    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    torch.manual_seed(0)
    policy = smolvla_in_dtype(make_tiny_smolvla(device=device), dtype).to(device).eval()
    stats = {k: {"mean": torch.zeros(STATE_DIM), "std": torch.ones(STATE_DIM)} for k in ("observation.state", "action")}
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=stats)
    batch = pre(
        {
            "observation.images.front": torch.rand(batch_size, 3, 64, 64),
            "observation.state": torch.randn(batch_size, STATE_DIM),
            "action": torch.randn(batch_size, 10, STATE_DIM),
            "task": ["pick up the cube"] * batch_size,
        }
    )
    return policy, batch


def make_setup(args: argparse.Namespace) -> Setup:
    """The policy named by ``args.model`` on ``args.device`` in ``args.dtype``, a batch of
    ``args.batch`` samples and a fixed flow noise (every compared call samples from the same)."""
    dtype = getattr(torch, args.dtype)
    if args.model == "tiny":
        policy, batch = tiny_policy_and_batch(args.batch, args.device, dtype)
    else:
        from tmrl_vla.models.real_size import make_real_policy, real_batch

        torch.manual_seed(0)
        policy = make_real_policy(args.model, args.device, dtype).eval()
        batch = real_batch(args.model, policy, args.batch)
    config = policy.config
    shape = (args.batch, config.chunk_size, config.max_action_dim)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(args.device)
    return Setup(args.model, policy, batch, noise, args.device, args.dtype)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--device``, ``--dtype``: which policy, where, in which precision."""
    parser.add_argument("--model", choices=MODELS, default="tiny", help="policy under test (real sizes: random init)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="bfloat16: SmolVLA's VLM, pi0/pi0.5 as LeRobot's dtype=bfloat16 (vision path float32)",
    )


def latency_args(description: str, extra=None, argv: list[str] | None = None, repeats: int = 60):
    """The latency benchmarks' shared options (``--repeats``, ``--batch``, ``--threads`` and
    :func:`add_model_args`), threads applied; ``extra(parser)`` adds a script's own; ``argv``: the
    arguments (None: the command line); ``repeats``: the default number of repeats."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    add_model_args(parser)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def shared_copy(policy: nn.Module) -> nn.Module:
    """A deep copy of ``policy`` whose parameters and buffers *are* the original's (same tensors).

    Why: the benchmarks wrap copies of one policy (CSP, plain LoRA, LeRobot's PEFT) and time them
    against it; full copies of pi0 (8 GB in bfloat16) would not fit three times. LoRA wrappers are
    new modules around the shared base layers, so each copy still has its own adapter. Merging a
    *fresh* adapter (LoRA's B is zero at init) adds exactly zero to the shared weights; never merge
    a trained adapter into a shared copy.
    """
    memo = {id(t): t for t in itertools.chain(policy.parameters(), policy.buffers())}
    return copy.deepcopy(policy, memo)


def calibrated_csp(policy, batch):
    """The CSP wrapper of a (shared) copy of ``policy``, its noise scale calibrated on ``batch``, in eval mode."""
    from tmrl_vla.csp.policy import CSPPolicy

    csp = CSPPolicy.from_base(shared_copy(policy))
    csp.calibrate_segment_scales([batch])
    return csp.eval()


def csp_and_plain_lora(policy, batch):
    """The CSP wrapper of a copy of ``policy`` and, for reference, the same LoRA under plain PEFT."""
    from peft import LoraConfig, get_peft_model

    csp = calibrated_csp(policy, batch)
    lora = get_peft_model(
        shared_copy(policy), LoraConfig(r=csp.config.lora_r, target_modules=csp.backend.default_lora_targets())
    )
    return csp, lora.get_base_model().eval()


def lerobot_lora(policy, csp_config, backend):
    """A (shared) copy of ``policy`` wrapped by LeRobot's own PEFT path, as ``lerobot-train
    --peft.*`` does it (``PreTrainedPolicy.wrap_with_peft``: freeze everything, ``get_peft_model``),
    with the LoRA of ``csp_config`` (rank, alpha, dropout) on the CSP backend's target modules.

    ``wrap_with_peft`` refuses a policy without ``pretrained_path`` (LoRA on random weights is
    pointless for training, not for timing), so the copy is given a placeholder one.
    """
    from peft import LoraConfig

    copy_ = shared_copy(policy)
    copy_.config.pretrained_path = "benchmark/random-init"
    lora = LoraConfig(
        r=csp_config.lora_r,
        lora_alpha=csp_config.lora_alpha,
        lora_dropout=csp_config.lora_dropout,
        target_modules=csp_config.lora_target_modules or backend.default_lora_targets(),
    )
    return copy_.wrap_with_peft(peft_config=lora)


MIN_TRAINING_SIGMA = 0.05  # every sample noised: a timed step always does the CSP hooks' work


def training_sigma(batch_size: int, device: str) -> torch.Tensor:
    """Per-sample sigma (b,) drawn as the CSP trainer draws it (seeded), kept >= ``MIN_TRAINING_SIGMA``."""
    from tmrl_vla.csp.trainer import CSPTrainConfig, sample_sigma

    sigma = sample_sigma(batch_size, CSPTrainConfig(), torch.Generator().manual_seed(0))
    return sigma.clamp_min(MIN_TRAINING_SIGMA).to(device)


def csp_train_step(csp, batch: dict, sigma: torch.Tensor, steps: int) -> Callable[[], None]:
    """One CSP trainer step (``train_csp``'s forward at per-sample ``sigma``, backward, clipping,
    AdamW with its warm-up/cosine schedule over the trainable parameters) as a callable."""
    from tmrl_vla.csp.trainer import CSPTrainConfig
    from tmrl_vla.training import adamw_warmup_cosine

    config = CSPTrainConfig(steps=steps)
    params = csp.trainable_parameters()
    optimizer, scheduler = adamw_warmup_cosine(params, config.lr, config.weight_decay, config.warmup_steps, steps)

    def step() -> None:
        per_sample, _ = csp(dict(batch), sigma=sigma, reduction="none")
        optimizer.zero_grad(set_to_none=True)
        per_sample.mean().backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        scheduler.step()

    return step


def lerobot_train_step(peft_policy, batch: dict) -> Callable[[], None]:
    """One ``lerobot-train`` step (``update_policy`` without accelerate) of a PEFT-wrapped policy:
    forward, backward, clipping to the preset's norm, an AdamW step built by the policy's optimizer
    preset over ``get_optim_params()`` (frozen parameters have no gradient: skipped), zero_grad."""
    preset = peft_policy.config.get_optimizer_preset()
    optimizer = preset.build(peft_policy.get_optim_params())

    def step() -> None:
        loss, _ = peft_policy.forward(dict(batch))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(peft_policy.parameters(), preset.grad_clip_norm)
        optimizer.step()
        optimizer.zero_grad()

    return step


def tmrl_actor(csp, heads: tuple[str, ...], image_grid: int, device: str) -> nn.Module:
    """A fresh high-level policy for ``csp``'s pooled prefix (on ``image_grid``) plus the state."""
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.observation import prefix_feature_width

    config = HighLevelConfig(
        obs_dim=prefix_feature_width(csp, image_grid) + STATE_DIM,
        action_dim=STATE_DIM,
        embed_dim=csp.embed_width,
        heads=heads,
    )
    return HighLevelPolicy(config).to(device)


def synchronize(device: str) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); nothing on CPU."""
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timings:
    """Wall-clock and CPU seconds of every call of each run, in the interleaved order they were made."""

    times: dict[str, list[float]]
    cpu: dict[str, list[float]]

    @property
    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items()}

    def paired_ratio(self, num: str, den: str, *, cpu: bool = False) -> float:
        """Median over repeats of ``num``'s time over ``den``'s in the *same* repeat.

        Why besides the ratio of medians: the two calls of one repeat run back to back, so they
        share the machine's load at that moment; on a shared CPU whose load swings by a factor of
        several within minutes, the per-repeat ratio cancels most of that swing.
        """
        times = self.cpu if cpu else self.times
        return round(statistics.median(a / b for a, b in zip(times[num], times[den], strict=True)), 4)

    def summary(self, baseline: str) -> dict:
        """The JSON fields: median and min milliseconds of each run and paired ratios against
        ``baseline``, in wall-clock time and in this process's CPU time (``time.process_time``:
        all its threads; on a CPU shared with other jobs it counts only the work done, not the
        waiting for a core, so it is the steadier measure there; meaningless on CUDA)."""
        others = [k for k in self.times if k != baseline]
        return {
            "median_ms": {k: round(v * 1000, 2) for k, v in self.medians.items()},
            "min_ms": {k: round(min(v) * 1000, 2) for k, v in self.times.items()},
            "paired_ratios": {k: self.paired_ratio(k, baseline) for k in others},
            "cpu_median_ms": {k: round(statistics.median(v) * 1000, 2) for k, v in self.cpu.items()},
            "cpu_paired_ratios": {k: self.paired_ratio(k, baseline, cpu=True) for k in others},
        }


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, *, grad: bool = False) -> Timings:
    """Time each run in turn within every repeat, so load drifts hit all alike (after one warm-up
    call each; the order rotates from repeat to repeat); print each run's median. With CUDA, each
    timing waits for the GPU's queued work (kernels run asynchronously)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    times: dict[str, list[float]] = {k: [] for k in runs}
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    with torch.set_grad_enabled(grad):
        for fn in runs.values():  # warm-up
            fn()
        names = list(runs)
        for i in range(repeats):
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotated: no run always goes first
                synchronize(device)
                start, cpu_start = time.perf_counter(), time.process_time()
                runs[name]()
                synchronize(device)
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - cpu_start)
    timings = Timings(times, cpu)
    for name, t in timings.medians.items():
        low, high = min(times[name]) * 1000, max(times[name]) * 1000
        cpu_ms = statistics.median(cpu[name]) * 1000
        print(f"{name:<10} median {t * 1000:.2f} ms (min {low:.2f} max {high:.2f}; cpu median {cpu_ms:.2f} ms)")
    return timings


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int, *, grad: bool = False) -> dict[str, float]:
    """Median seconds of each run, timed by :func:`interleaved`."""
    return interleaved(runs, repeats, grad=grad).medians


def ratio(num: float, den: float) -> float:
    """``num / den`` rounded to 4 decimals, as every benchmark reports its ratios."""
    return round(num / den, 4)
