"""Latency of CSPPolicy.predict_action_chunk vs the bare LeRobot policy, measured interleaved.

    python eval/bench_overhead.py [--repeats 60] [--batch 1]

The embedded default: the tiny SmolVLA (random weights: latency does not depend on them) with a
CSP adapter of the default config. Each repeat times, in turn, the bare policy, the same LoRA under
plain PEFT (no CSP hooks), CSP with its adapter merged (``merge_adapter()``, how a frozen CSP policy
runs in TMRL and evaluation) at sigma = 0 and 0.5, and CSP unmerged (as in training) at sigma = 0,
so drifts in machine load hit all of them alike; medians are compared. The last line is one JSON
object: ``{"ratio_sigma_0": r0, "ratio_sigma_0.5": r5, "repeats": n, ...}`` (merged CSP against the
bare policy; ``ratio_sigma_0_unmerged`` for the training form; ``*_vs_lora`` for unmerged CSP
against plain PEFT LoRA, i.e. the cost of the hooks alone).
"""

from __future__ import annotations

import json

import torch
from benchlib import calibrated_csp, csp_and_plain_lora, interleaved_medians, latency_args, tiny_policy_and_batch


def main() -> None:
    args = latency_args(__doc__)

    policy, batch = tiny_policy_and_batch(args.batch)
    csp, lora_policy = csp_and_plain_lora(policy, batch)
    merged = calibrated_csp(policy, batch).merge_adapter()
    noise = torch.randn(args.batch, 10, 32)
    expected = policy.predict_action_chunk(dict(batch), noise=noise)
    if not torch.equal(merged.predict_action_chunk(dict(batch), sigma=0.0, noise=noise), expected):
        raise AssertionError("merged CSP at sigma = 0 must reproduce the bare policy exactly")
    med = interleaved_medians(
        {
            "bare": lambda: policy.predict_action_chunk(dict(batch), noise=noise),
            "lora": lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise),
            "sigma_0": lambda: merged.predict_action_chunk(dict(batch), sigma=0.0, noise=noise),
            "sigma_0.5": lambda: merged.predict_action_chunk(dict(batch), sigma=0.5, noise=noise),
            "unmerged": lambda: csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise),
        },
        args.repeats,
    )
    print(
        json.dumps(
            {
                "ratio_sigma_0": round(med["sigma_0"] / med["bare"], 4),
                "ratio_sigma_0.5": round(med["sigma_0.5"] / med["bare"], 4),
                "ratio_sigma_0_unmerged": round(med["unmerged"] / med["bare"], 4),
                "ratio_sigma_0_vs_lora": round(med["unmerged"] / med["lora"], 4),
                "identical_outputs_sigma_0": True,
                "repeats": args.repeats,
                "batch": args.batch,
            }
        )
    )


if __name__ == "__main__":
    main()
