"""TMRL vs DSRL on the default fine-tuning task: success vs environment episodes over several seeds.

    python eval/compare_tmrl_dsrl.py                      # 5 seeds each, the embedded default (~2 h on 2 cores)
    python eval/compare_tmrl_dsrl.py --seeds 3 --decisions 400 --jobs 2
    python eval/compare_tmrl_dsrl.py --rl.observation.image_grid=1 --out outputs/cmp_mean_pooled

Any further ``--rl.*`` argument is a recipe override (as in ``recipes/finetune_pick.py``) applied to
both agents' preset.

Both agents run the recipe's RL stage (``tmrl_vla.rl.run.run_rl``) with the same preset, one
seed at a time per job, each job in its own process with one thread; the measures, censoring and
bounds are :mod:`tmrl_vla.rl.comparison`'s (``--measure``: ``evaluation``, the deterministic agent
every ``--eval-every`` decisions, or ``training``, the rolling training success; both are in the
JSON). ``--extend-unreached`` continues only the runs that have not reached the threshold;
``--report`` trains nothing and summarises the runs as they stand. Writes ``curves.png`` and
``summary.json`` and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def run_job(job):
    """One (agent, seed) run in a worker process with one thread."""
    import torch

    from tmrl_vla.rl.comparison import run_or_read

    torch.set_num_threads(1)
    return run_or_read(job)


def parse(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=1500, help="decision steps per run (x num_envs envs)")
    parser.add_argument("--num-envs", type=int, default=None, help="default: the recipe preset's")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--measure", choices=("evaluation", "training"), default="evaluation")
    parser.add_argument("--eval-every", type=int, default=100, help="decisions between deterministic evaluations")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    parser.add_argument("--out", default="outputs/compare_tmrl_dsrl")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--policy", default=None, help="LeRobot checkpoint (default: the embedded BC policy)")
    parser.add_argument("--adapter", default=None, help="its CSP adapter (default: the embedded one)")
    parser.add_argument("--episode-length", type=int, default=None, help="override the env's (tests)")
    parser.add_argument("--tiny", action="store_true", help="tiny critics and batches (tests)")
    parser.add_argument(
        "--extend-unreached",
        action="store_true",
        help="continue to --decisions only the runs that have not yet reached the threshold (by --measure); "
        "the others keep their length, so per-run success rates then cover different lengths",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="train nothing: summarise the runs under --out as they stand, whatever their lengths",
    )
    args, overrides = parser.parse_known_args(argv)
    if any(not o.startswith("--rl.") for o in overrides):
        parser.error(f"unknown arguments {overrides}: only --rl.* recipe overrides are passed through")
    return args, overrides


def rl_config(args, overrides: list[str]):
    """The recipe's RL preset at this comparison's length, with ``--tiny`` and ``--rl.*`` applied."""
    from tmrl_vla.finetune import FinetuneConfig, default_rl, parse_args
    from tmrl_vla.rl.config import AgentConfig, SACConfig

    rl = default_rl()
    rl = dataclasses.replace(
        rl, total_decisions=args.decisions, eval_every=min(args.eval_every, args.decisions), save_every=50
    )
    if args.num_envs:
        rl = dataclasses.replace(rl, num_envs=args.num_envs)
    if args.tiny:
        keep = ("updates_per_decision", "n_step", "exploration")  # the preset's; the rest tiny
        tiny_sac = SACConfig(utd=1, batch_size=4, warmup_decisions=1, **{k: getattr(rl.sac, k) for k in keep})
        rl = dataclasses.replace(
            rl, agent=AgentConfig(heads=rl.agent.heads, hidden=16, num_critics=2), sac=tiny_sac, eval_episodes=2
        )
    return parse_args(FinetuneConfig(rl=rl), overrides).rl if overrides else rl


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse(argv)
    from tmrl_vla.assets import default_policy_and_adapter
    from tmrl_vla.envs.spec import EnvSpec
    from tmrl_vla.metrics import read_metrics
    from tmrl_vla.rl.comparison import comparison_runs, summarise
    from tmrl_vla.rl.curves import plot_learning_curve

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy, adapter = args.policy, args.adapter
    if policy is None and not args.report:  # a report trains nothing: no assets needed
        policy, adapter = default_policy_and_adapter(args.cache_dir)
    env = EnvSpec(shift="moved_camera", episode_length=args.episode_length)
    jobs = comparison_runs(
        rl_config(args, overrides),
        args.seeds,
        out,
        env=env,
        policy=policy,
        adapter=adapter,
        threshold=args.threshold,
        measure=args.measure,
        extend_unreached=args.extend_unreached,
        report=args.report,
    )
    if args.jobs > 1 and not args.report:  # a report only reads files
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            # imap: a failing run raises as soon as the runs before it are done, not after all of them
            results = list(pool.imap(run_job, jobs, chunksize=1))
    else:
        results = [run_job(job) for job in jobs]
    runs = {a: [out / a / f"seed{s}" / "metrics.jsonl" for s in range(args.seeds)] for a in ("tmrl", "dsrl")}
    curves = {a: [read_metrics(path) for path in paths] for a, paths in runs.items()}
    plot_learning_curve(curves, out / "curves.png", threshold=args.threshold)
    summary = summarise(results, args.threshold) | {"measure": args.measure, "runs": results}
    # with --extend-unreached or --report the runs' lengths can differ: list them
    lengths = sorted({r["decisions"] for r in results})
    summary["decisions_per_run"] = lengths if args.extend_unreached or args.report else args.decisions
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"curves: {out / 'curves.png'}  summary: {out / 'summary.json'}")
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
    return summary


if __name__ == "__main__":
    main()
