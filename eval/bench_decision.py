"""Latency of one TMRL decision vs the bare policy's predict_action_chunk, measured interleaved.

    python eval/bench_decision.py [--repeats 60] [--batch 1] [--all-heads] [--no-lora]
        [--model tiny|smolvla] [--device cpu|cuda] [--dtype float32|bfloat16]

A decision is: clean prefix once (vision encoder), pooled features (on the recipe preset's image
grid), the high-level policy's heads (the preset's, or all three with ``--all-heads``: then eps_c
is the policy's instead of the CSP policy's draw), then the CSP policy sampling the chunk from z
under the prefix noised at sigma, reusing the prefix. The CSP policy is frozen in TMRL, so its
adapter is merged (``merge_adapter()``), as the recipe runs it. ``--model tiny`` (default): the
embedded default's tiny SmolVLA; ``smolvla``: LeRobot's SmolVLA at its real size (random weights:
latency does not depend on them). pi0 and pi0.5 cannot make a decision yet: their CSP backends do
not implement ``prefix_inputs`` (the clean prefix computed once per decision). The last line is one
JSON object: ``{"decision_latency_ratio": r, "repeats": n, ...}``; also reported (unless
``--no-lora``), the ratio against plain PEFT LoRA sampling (the LoRA's own cost removed);
``paired_ratios``: medians of the per-repeat ratios against ``bare`` (robust to load swings), and
the same in CPU time (``cpu_*``, see ``benchlib.Timings.summary``).
"""

from __future__ import annotations

import json

from benchlib import csp_and_plain_lora, interleaved, latency_args, make_setup, ratio, run_settings, tmrl_actor


def _options(parser) -> None:
    parser.add_argument("--all-heads", action="store_true")
    parser.add_argument("--no-lora", action="store_true", help="skip the plain-PEFT reference (one call fewer)")


def main(argv: list[str] | None = None) -> dict:
    args = latency_args(__doc__, extra=_options, argv=argv)
    if args.model in ("pi0", "pi05"):
        raise SystemExit(
            f"{args.model}: no TMRL decision yet (its CSP backend has no prefix_inputs, so the clean prefix "
            "cannot be computed once and reused)"
        )

    from tmrl_vla.finetune import default_rl
    from tmrl_vla.rl.decision import decide

    preset = default_rl()
    grid = preset.observation.image_grid
    heads = ("z", "y", "eps_c") if args.all_heads else preset.agent.active_heads

    setup = make_setup(args)
    policy, batch, noise = setup.policy, setup.batch, setup.noise
    csp, lora_policy = csp_and_plain_lora(policy, batch)
    csp.merge_adapter()
    actor = tmrl_actor(csp, heads, grid, args.device)
    runs = {
        "bare": lambda: policy.predict_action_chunk(dict(batch), noise=noise),
        "lora": lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise),
        "decision": lambda: decide(csp, actor, dict(batch), image_grid=grid),
    }
    if args.no_lora:
        del runs["lora"]
    timings = interleaved(runs, args.repeats)
    med = timings.medians
    result = {"decision_latency_ratio": ratio(med["decision"], med["bare"])}
    if "lora" in med:
        result["decision_vs_lora_ratio"] = ratio(med["decision"], med["lora"])
    result |= {
        **timings.summary("bare"),
        "image_grid": grid,
        "heads": list(heads),
        **run_settings(args, setup),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
