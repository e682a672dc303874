"""Latency of one CSP training step vs the same LoRA step through LeRobot's PEFT path, interleaved.

    python eval/bench_train_step.py [--repeats 10] [--batch 1] [--model tiny|smolvla|pi0|pi05]
        [--device cpu|cuda] [--dtype float32|bfloat16]

Both steps train the same LoRA (rank, alpha, dropout and target modules of the default CSP
adapter) on the same batch, from the same frozen weights:

* ``csp``: what :func:`tmrl_vla.csp.trainer.train_csp` does per step: ``CSPPolicy.forward`` at a
  per-sample sigma (b,) drawn as the trainer draws it (kept >= 0.05, so the context is always
  noised and the sigma embedding always added), backward, clipping of the trainable parameters'
  gradient norm to 10, AdamW step over the adapter's trainable parameters (LoRA + sigma embedding);
* ``lerobot``: what ``lerobot-train --peft.r=...`` does per step (``update_policy``): the policy
  wrapped by ``PreTrainedPolicy.wrap_with_peft``, ``policy.forward(batch)``, backward, clipping to
  the policy's ``grad_clip_norm``, an AdamW step built by the policy's optimizer preset over
  ``get_optim_params()`` (frozen parameters have no gradient and are skipped), ``zero_grad``.

Each repeat times both in turn; medians are compared. The flow noise and time are drawn inside
each forward, as in training. The last line is one JSON object:
``{"train_step_ratio": r, "repeats": n, ...}`` (CSP step over LeRobot's PEFT step, ratio of
medians); ``paired_ratios.csp``: the median of the per-repeat ratios (robust to load swings), and
the same in CPU time (``cpu_*``, see ``benchlib.Timings.summary``).
"""

from __future__ import annotations

import json

from benchlib import (
    calibrated_csp,
    csp_train_step,
    interleaved,
    latency_args,
    lerobot_lora,
    lerobot_train_step,
    make_setup,
    ratio,
    run_settings,
    training_sigma,
)


def main(argv: list[str] | None = None) -> dict:
    args = latency_args(__doc__, argv=argv, repeats=10)
    setup = make_setup(args)
    batch = setup.batch
    csp = calibrated_csp(setup.policy, batch).train()
    peft_policy = lerobot_lora(setup.policy, csp.config, csp.backend).train()
    sigma = training_sigma(args.batch, args.device)
    timings = interleaved(
        {"lerobot": lerobot_train_step(peft_policy, batch), "csp": csp_train_step(csp, batch, sigma, args.repeats + 1)},
        args.repeats,
        grad=True,
    )
    med = timings.medians
    trainable = {
        "csp": sum(p.numel() for p in csp.trainable_parameters()),
        "lerobot": sum(p.numel() for p in peft_policy.parameters() if p.requires_grad),
    }
    result = {
        "train_step_ratio": ratio(med["csp"], med["lerobot"]),
        **timings.summary("lerobot"),
        "trainable_parameters": trainable,
        "sigma": [round(float(s), 4) for s in sigma],
        **run_settings(args, setup),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
