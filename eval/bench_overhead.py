"""Latency of CSPPolicy.predict_action_chunk vs the bare LeRobot policy, measured interleaved.

    python eval/bench_overhead.py [--repeats 60] [--batch 1] [--model tiny|smolvla|pi0|pi05]
        [--device cpu|cuda] [--dtype float32|bfloat16] [--variants bare,lora,sigma_0,...]

``--model tiny`` (default): the embedded default's tiny SmolVLA; the others are LeRobot's policies
at their real sizes (random weights: latency does not depend on them), each with a CSP adapter of
the default config. Each repeat times, in turn, the bare policy, the same LoRA under plain PEFT (no
CSP hooks), CSP with its adapter merged (``merge_adapter()``, how a frozen CSP policy runs in TMRL
and evaluation) at sigma = 0 and 0.5, and CSP unmerged (as in training) at sigma = 0, so drifts in
machine load hit all of them alike; medians are compared. On the real sizes only ``bare`` and
``sigma_0`` are timed unless ``--variants`` names more (a pi0 call takes most of a minute on 2 CPU
cores). Merged CSP at sigma = 0 must return exactly the bare policy's actions for the same flow
noise (asserted). The last line is one JSON object: ``{"ratio_sigma_0": r0, "repeats": n, ...}``
(merged CSP against the bare policy; ``ratio_sigma_0.5``; ``ratio_sigma_0_unmerged`` for the
training form; ``ratio_sigma_0_vs_lora`` for unmerged CSP against plain PEFT LoRA, i.e. the cost of
the hooks alone; each only when its variants were timed); ``paired_ratios``: each variant against
``bare``, the median of the per-repeat ratios (robust to load swings on a shared machine), and
the same in CPU time (``cpu_*``, see ``benchlib.Timings.summary``).
"""

from __future__ import annotations

import json

import torch
from benchlib import calibrated_csp, csp_and_plain_lora, interleaved, latency_args, make_setup, ratio, run_settings

VARIANTS = ("bare", "lora", "sigma_0", "sigma_0.5", "unmerged")
REAL_SIZE_VARIANTS = ("bare", "sigma_0")


def _variants(parser) -> None:
    parser.add_argument(
        "--variants",
        default=None,
        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all on tiny, bare,sigma_0 on real sizes)",
    )


def main(argv: list[str] | None = None) -> dict:
    args = latency_args(__doc__, extra=_variants, argv=argv)
    default = VARIANTS if args.model == "tiny" else REAL_SIZE_VARIANTS
    chosen = tuple(args.variants.split(",")) if args.variants else default
    unknown = set(chosen) - set(VARIANTS)
    if unknown or not {"bare", "sigma_0"} <= set(chosen):
        raise SystemExit(f"--variants must include bare and sigma_0 and name only {VARIANTS}; got {chosen}")

    setup = make_setup(args)
    policy, batch, noise = setup.policy, setup.batch, setup.noise
    merged = calibrated_csp(policy, batch).merge_adapter()
    expected = policy.predict_action_chunk(dict(batch), noise=noise)
    if not torch.isfinite(expected).all():  # random weights: a NaN would make every timing meaningless
        raise AssertionError("the bare policy's actions are not finite")
    if not torch.equal(merged.predict_action_chunk(dict(batch), sigma=0.0, noise=noise), expected):
        raise AssertionError("merged CSP at sigma = 0 must reproduce the bare policy exactly")
    calls = {
        "bare": lambda: policy.predict_action_chunk(dict(batch), noise=noise),
        "sigma_0": lambda: merged.predict_action_chunk(dict(batch), sigma=0.0, noise=noise),
        "sigma_0.5": lambda: merged.predict_action_chunk(dict(batch), sigma=0.5, noise=noise),
    }
    if {"lora", "unmerged"} & set(chosen):
        csp, lora_policy = csp_and_plain_lora(policy, batch)
        calls["lora"] = lambda: lora_policy.predict_action_chunk(dict(batch), noise=noise)
        calls["unmerged"] = lambda: csp.predict_action_chunk(dict(batch), sigma=0.0, noise=noise)
    timings = interleaved({name: calls[name] for name in VARIANTS if name in chosen}, args.repeats)
    med = timings.medians

    result = {"ratio_sigma_0": ratio(med["sigma_0"], med["bare"])}
    if "sigma_0.5" in med:
        result["ratio_sigma_0.5"] = ratio(med["sigma_0.5"], med["bare"])
    if "unmerged" in med:
        result["ratio_sigma_0_unmerged"] = ratio(med["unmerged"], med["bare"])
    if {"unmerged", "lora"} <= set(med):
        result["ratio_sigma_0_vs_lora"] = ratio(med["unmerged"], med["lora"])
    result |= {
        "identical_outputs_sigma_0": True,
        **timings.summary("bare"),
        **run_settings(args, setup),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
