"""Latency of one TMRL decision vs the bare policy's predict_action_chunk, measured interleaved.

    python eval/bench_decision.py [--repeats 60] [--batch 1]

A decision is: clean prefix once (vision encoder), pooled features, the high-level policy's three
heads, then the CSP policy sampling the chunk from z under the prefix noised at sigma, reusing the
prefix. The embedded default (tiny SmolVLA, random weights: latency does not depend on them). The
last line is one JSON object: ``{"decision_latency_ratio": r, "repeats": n, ...}``; also reported,
the ratio against plain PEFT LoRA sampling (the LoRA's own cost removed).
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
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.decision import decide

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
    actor = HighLevelPolicy(HighLevelConfig(obs_dim=2 * csp.embed_width + 6, action_dim=6, embed_dim=csp.embed_width))
    noise = torch.randn(b, 10, 32)
    runs = {
        "bare": lambda: bare.predict_action_chunk(dict(batch), noise=noise),
        "lora": lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise),
        "decision": lambda: decide(csp, actor, dict(batch)),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<9} median {v * 1000:.2f} ms")
    print(
        json.dumps(
            {
                "decision_latency_ratio": round(med["decision"] / med["bare"], 4),
                "decision_vs_lora_ratio": round(med["decision"] / med["lora"], 4),
                "repeats": args.repeats,
                "batch": b,
            }
        )
    )


if __name__ == "__main__":
    main()
