"""Latency of CSPPolicy.predict_action_chunk vs the bare LeRobot policy, measured interleaved.

    python eval/bench_overhead.py [--repeats 60] [--batch 1]

The embedded default: the tiny SmolVLA (random weights: latency does not depend on them) with a
CSP adapter of the default config. Each repeat times, in turn, the bare policy, the same LoRA under
plain PEFT (no CSP hooks), CSP at sigma = 0 and CSP at sigma = 0.5, so drifts in machine load hit
all of them alike; medians are compared. The last line is one JSON object:
``{"ratio_sigma_0": r0, "ratio_sigma_0.5": r5, "repeats": n, ...}`` (ratios against the bare policy;
``*_vs_lora`` against plain PEFT LoRA, i.e. the cost of the hooks alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from lerobot.policies.factory import make_pre_post_processors
    from peft import LoraConfig, get_peft_model

    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    torch.manual_seed(0)
    bare = make_tiny_smolvla().eval()
    stats = {k: {"mean": torch.zeros(6), "std": torch.ones(6)} for k in ("observation.state", "action")}
    pre, _ = make_pre_post_processors(bare.config, dataset_stats=stats)
    b = args.batch
    batch = pre(
        {
            "observation.images.front": torch.rand(b, 3, 64, 64),
            "observation.state": torch.randn(b, 6),
            "action": torch.randn(b, 10, 6),
            "task": ["pick up the cube"] * b,
        }
    )
    csp = CSPPolicy.from_base(copy.deepcopy(bare))
    csp.calibrate_segment_scales([batch])
    csp.eval()
    lora = get_peft_model(
        copy.deepcopy(bare), LoraConfig(r=csp.config.lora_r, target_modules=csp.backend.default_lora_targets())
    )
    lora_policy = lora.get_base_model().eval()
    noise = torch.randn(b, 10, 32)

    runs = {
        "bare": lambda: bare.predict_action_chunk(dict(batch), noise=noise),
        "lora": lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise),
        "sigma_0": lambda: csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise),
        "sigma_0.5": lambda: csp.predict_action_chunk(dict(batch), sigma=0.5, noise=noise),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"{name:<10} median {t * 1000:.2f} ms")
    print(
        json.dumps(
            {
                "ratio_sigma_0": round(med["sigma_0"] / med["bare"], 4),
                "ratio_sigma_0.5": round(med["sigma_0.5"] / med["bare"], 4),
                "ratio_sigma_0_vs_lora": round(med["sigma_0"] / med["lora"], 4),
                "ratio_sigma_0.5_vs_lora": round(med["sigma_0.5"] / med["lora"], 4),
                "repeats": args.repeats,
                "batch": b,
            }
        )
    )


if __name__ == "__main__":
    main()
