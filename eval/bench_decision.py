"""Latency of one TMRL decision vs the bare policy's predict_action_chunk, measured interleaved.

    python eval/bench_decision.py [--repeats 60] [--batch 1]

A decision is: clean prefix once (vision encoder), pooled features (on the recipe preset's image
grid), the high-level policy's heads (the preset's, or all three with ``--all-heads``: then eps_c
is the policy's instead of the CSP policy's draw), then the CSP policy sampling the chunk from z
under the prefix noised at sigma, reusing the prefix. The CSP policy is frozen in TMRL, so its
adapter is merged (``merge_adapter()``), as the recipe runs it. The embedded default (tiny
SmolVLA, random weights: latency does not depend on them). The last line is one JSON object:
``{"decision_latency_ratio": r, "repeats": n, ...}``; also reported, the ratio against plain PEFT
LoRA sampling (the LoRA's own cost removed).
"""

from __future__ import annotations

import json

import torch
from benchlib import csp_and_plain_lora, interleaved_medians, latency_args, tiny_policy_and_batch


def main(argv: list[str] | None = None) -> dict:
    args = latency_args(__doc__, extra=lambda p: p.add_argument("--all-heads", action="store_true"), argv=argv)

    from tmrl_vla.finetune import default_rl
    from tmrl_vla.rl.actor import HighLevelConfig, HighLevelPolicy
    from tmrl_vla.rl.decision import decide
    from tmrl_vla.rl.observation import prefix_feature_width

    preset = default_rl()
    grid = preset.observation.image_grid
    heads = ("z", "y", "eps_c") if args.all_heads else preset.agent.active_heads

    policy, batch = tiny_policy_and_batch(args.batch)
    csp, lora_policy = csp_and_plain_lora(policy, batch)
    csp.merge_adapter()
    actor = HighLevelPolicy(
        HighLevelConfig(
            obs_dim=prefix_feature_width(csp, grid) + 6, action_dim=6, embed_dim=csp.embed_width, heads=heads
        )
    )
    noise = torch.randn(args.batch, 10, 32)
    med = interleaved_medians(
        {
            "bare": lambda: policy.predict_action_chunk(dict(batch), noise=noise),
            "lora": lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise),
            "decision": lambda: decide(csp, actor, dict(batch), image_grid=grid),
        },
        args.repeats,
    )
    result = {
        "decision_latency_ratio": round(med["decision"] / med["bare"], 4),
        "decision_vs_lora_ratio": round(med["decision"] / med["lora"], 4),
        "repeats": args.repeats,
        "batch": args.batch,
        "image_grid": grid,
        "heads": list(heads),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
