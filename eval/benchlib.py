"""Shared pieces of the benchmarks: the embedded default's tiny policy and interleaved timing."""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch


def tiny_policy_and_batch(batch_size: int):
    """A random tiny SmolVLA (latency does not depend on the weights) and one preprocessed batch."""
    from lerobot.policies.factory import make_pre_post_processors

    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    torch.manual_seed(0)
    policy = make_tiny_smolvla().eval()
    stats = {k: {"mean": torch.zeros(6), "std": torch.ones(6)} for k in ("observation.state", "action")}
    pre, _ = make_pre_post_processors(policy.config, dataset_stats=stats)
    batch = pre(
        {
            "observation.images.front": torch.rand(batch_size, 3, 64, 64),
            "observation.state": torch.randn(batch_size, 6),
            "action": torch.randn(batch_size, 10, 6),
            "task": ["pick up the cube"] * batch_size,
        }
    )
    return policy, batch


def latency_args(description: str, extra=None, argv: list[str] | None = None):
    """The latency benchmarks' shared options (``--repeats``, ``--batch``, ``--threads``), threads
    applied; ``extra(parser)`` adds a script's own; ``argv``: the arguments (None: the command line)."""
    import argparse

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def calibrated_csp(policy, batch):
    """The CSP wrapper of a copy of ``policy``, its noise scale calibrated on ``batch``, in eval mode."""
    from tmrl_vla.csp.policy import CSPPolicy

    csp = CSPPolicy.from_base(copy.deepcopy(policy))
    csp.calibrate_segment_scales([batch])
    return csp.eval()


def csp_and_plain_lora(policy, batch):
    """The CSP wrapper of a copy of ``policy`` and, for reference, the same LoRA under plain PEFT."""
    from peft import LoraConfig, get_peft_model

    csp = calibrated_csp(policy, batch)
    lora = get_peft_model(
        copy.deepcopy(policy), LoraConfig(r=csp.config.lora_r, target_modules=csp.backend.default_lora_targets())
    )
    return csp, lora.get_base_model().eval()


def interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int, *, grad: bool = False) -> dict[str, float]:
    """Median seconds of each run, timed in turn within every repeat so load drifts hit all alike.
    With CUDA, each timing waits for the GPU's queued work (kernels run asynchronously)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.set_grad_enabled(grad):
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(repeats):
            for name, fn in runs.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, t in medians.items():
        print(f"{name:<10} median {t * 1000:.2f} ms")
    return medians
