"""TMRL vs DSRL on the default fine-tuning task: success vs environment episodes over several seeds.

    python eval/compare_tmrl_dsrl.py                      # 5 seeds each, the embedded default (~2 h on 2 cores)
    python eval/compare_tmrl_dsrl.py --seeds 3 --decisions 400 --jobs 2
    python eval/compare_tmrl_dsrl.py --rl.image_grid=1 --rl.success_buffer=true --out outputs/cmp_mean_pooled

Any further ``--rl.*`` argument is a recipe override (as in ``recipes/finetune_pick.py``) applied to
both agents' preset.

Both agents run the recipe's RL stage (``tmrl_vla.finetune.run_rl``) with the same preset, one
seed at a time per job, each job in its own process with one thread. Runs resume from their
checkpoints, so an interrupted comparison continues where it stopped. Episodes to threshold: the
training episodes when the success rate first reaches it, by one of two measures (``--measure``):
``evaluation`` (default), the deterministic high-level policy on fresh episodes every
``--eval-every`` decisions, which is what a user deploys; or ``training``, the rolling rate over the
last ``success_window`` training episodes, which includes the exploration noise (with noise held per
episode, every training episode is an exploration episode). Both are in the JSON. A run that
never reaches it counts as *censored* at its total episodes (a lower bound), and the ratio is then
a bound too: the JSON says so. To tighten such a bound cheaply, ``--extend-unreached`` continues
only the runs that have not reached the threshold; ``--report`` trains nothing and summarises the
runs as they stand (e.g. at another threshold, or while some are being continued). Writes
``curves.png`` and ``summary.json`` and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def run_one(job: dict) -> dict:
    """One (agent, seed) run in a worker process; returns its episodes-to-threshold."""
    import torch

    torch.set_num_threads(1)
    from tmrl_vla.finetune import run_rl
    from tmrl_vla.rl.curves import episodes_to_threshold, read_metrics

    cfg = job["cfg"]
    run_dir = Path(job["run_dir"])
    metrics = run_dir / "metrics.jsonl"

    def reached_by(rows: list[dict]) -> dict:
        return {
            m: episodes_to_threshold(rows, job["threshold"], min_episodes=cfg.rl.success_window, measure=m)
            for m in ("evaluation", "training")
        }

    if job["report"] and not metrics.exists():
        raise FileNotFoundError(f"--report summarises existing runs, and {run_dir} has no metrics.jsonl")
    rows = read_metrics(metrics) if metrics.exists() else []
    reached = reached_by(rows)
    finished = bool(rows) and rows[-1].get("decision") == cfg.rl.total_decisions
    # a run that already reached the threshold has its answer: continuing it changes nothing measured
    settled = job["extend_unreached"] and reached[job["measure"]] is not None
    if not (finished or settled or job["report"]):
        run_rl(cfg, job["policy"], job["adapter"], run_dir, log=lambda *_: None)
        rows = read_metrics(metrics)
        reached = reached_by(rows)
    return {
        "agent": cfg.rl.agent,
        "seed": cfg.rl.seed,
        "episodes_to_threshold": reached[job["measure"]],
        "episodes_to_threshold_by_measure": reached,
        "total_episodes": rows[-1]["rollout/episodes"],
        "decisions": rows[-1]["decision"],
        "training_success_rate": rows[-1]["rollout/successes"] / max(rows[-1]["rollout/episodes"], 1),
        "final_success_recent": rows[-1]["rollout/success_recent"],
        "final_eval_success": next((r["eval/success_rate"] for r in reversed(rows) if "eval/success_rate" in r), None),
    }


def ratio_ci(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of mean(a) / mean(b), resampling seeds within each agent."""
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        ra = [rng.choice(a) for _ in a]
        rb = [rng.choice(b) for _ in b]
        ratios.append(sum(ra) / len(ra) / (sum(rb) / len(rb)))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def summarise(results: list[dict], threshold: float) -> dict:
    from tmrl_vla.rl.curves import mean_ci95

    # Names fixed by the benchmark contract use "80" whatever the threshold; it is recorded beside them.
    out: dict = {"tmrl_episodes_to_80": None, "dsrl_episodes_to_80": None}
    per_agent: dict[str, list[float]] = {}
    for agent in ("tmrl", "dsrl"):
        runs = [r for r in results if r["agent"] == agent]
        values = [r["episodes_to_threshold"] or r["total_episodes"] for r in runs]
        per_agent[agent] = values
        mean, lo, hi = mean_ci95(values)
        out[f"{agent}_episodes_to_80"] = mean
        out[f"{agent}_ci95"] = [lo, hi]
        out[f"{agent}_censored"] = sum(r["episodes_to_threshold"] is None for r in runs)
        out[f"{agent}_final_success_recent"] = [r["final_success_recent"] for r in runs]
        # Successes per training episode over the whole run: what exploration bought before (or
        # without) convergence, the number a robot owner pays for.
        rate, rate_lo, rate_hi = mean_ci95([r["training_success_rate"] for r in runs])
        out[f"{agent}_training_success_rate"] = rate
        out[f"{agent}_training_success_rate_ci95"] = [rate_lo, rate_hi]
    a, b = per_agent["tmrl"], per_agent["dsrl"]
    out["ratio"] = (sum(a) / len(a)) / (sum(b) / len(b))
    out["ratio_ci95"] = list(ratio_ci(a, b)) if len(a) > 1 and len(b) > 1 else [math.nan, math.nan]
    out["seeds"] = min(len(a), len(b))
    out["threshold"] = threshold
    # A censored run counts at its total episodes, a lower bound of its true episodes-to-threshold;
    # so censored DSRL runs make the ratio an upper bound, censored TMRL runs a lower bound, and
    # both together leave it unbounded either way.
    censored = [agent for agent in ("tmrl", "dsrl") if out[f"{agent}_censored"]]
    out["ratio_bound"] = {(): "exact", ("dsrl",): "upper", ("tmrl",): "lower"}.get(tuple(censored), "none")
    if censored:
        meaning = {
            "upper": "the ratio is an upper bound (TMRL needs at most this fraction of DSRL's episodes)",
            "lower": "the ratio is a lower bound",
            "none": "the ratio bounds nothing (both agents have censored runs)",
        }[out["ratio_bound"]]
        out["note"] = (
            "censored runs never reached the threshold and count at their total episodes, so their "
            f"agent's episodes are lower bounds; {meaning}"
        )
    return out


def main(argv: list[str] | None = None) -> dict:
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

    from tmrl_vla.finetune import EnvSpec, FinetuneConfig, default_rl, parse_args
    from tmrl_vla.rl.agent import SACConfig

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    preset = FinetuneConfig(cache_dir=args.cache_dir)
    policy, adapter = args.policy, args.adapter
    if policy is None and not args.report:  # a report trains nothing: no assets needed
        from tmrl_vla.assets import build_default_assets
        from tmrl_vla.cache import AssetCache

        assets = build_default_assets(preset.assets, AssetCache(args.cache_dir))
        policy, adapter = str(assets.policy_dir), str(assets.csp_dir)
    rl = dataclasses.replace(
        default_rl(),
        total_decisions=args.decisions,
        eval_every=min(args.eval_every, args.decisions),
        save_every=50,
    )
    if args.num_envs:
        rl = dataclasses.replace(rl, num_envs=args.num_envs)
    if args.tiny:
        rl = dataclasses.replace(
            rl, hidden=16, num_critics=2, warmup_decisions=1, eval_episodes=2, sac=SACConfig(utd=1, batch_size=4)
        )
    if overrides:  # on top of this script's preset, e.g. --rl.image_grid=1
        rl = parse_args(dataclasses.replace(preset, rl=rl), overrides).rl
    env = EnvSpec(episode_length=args.episode_length)
    jobs = []
    for seed in range(args.seeds):
        for agent in ("tmrl", "dsrl"):
            cfg = dataclasses.replace(preset, rl=dataclasses.replace(rl, agent=agent, seed=seed), resume=True, env=env)
            run_dir = out / agent / f"seed{seed}"
            jobs.append(
                {
                    "cfg": cfg,
                    "run_dir": str(run_dir),
                    "policy": policy,
                    "adapter": adapter,
                    "threshold": args.threshold,
                    "measure": args.measure,
                    "extend_unreached": args.extend_unreached,
                    "report": args.report,
                }
            )
    if args.jobs > 1 and not args.report:  # a report only reads files
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
            # imap, not map: a run that fails (e.g. a run directory from another config) raises as
            # soon as the runs before it are done, instead of after every other run has finished
            results = list(pool.imap(run_one, jobs, chunksize=1))
    else:
        results = [run_one(job) for job in jobs]

    from tmrl_vla.rl.curves import plot_learning_curve, read_metrics

    curves = {
        agent: [read_metrics(out / agent / f"seed{s}" / "metrics.jsonl") for s in range(args.seeds)]
        for agent in ("tmrl", "dsrl")
    }
    plot_learning_curve(curves, out / "curves.png", threshold=args.threshold)
    summary = summarise(results, args.threshold)
    summary["measure"] = args.measure
    summary["runs"] = results
    # with --extend-unreached or --report the runs' lengths can differ: list them
    summary["decisions_per_run"] = (
        sorted({r["decisions"] for r in results}) if args.extend_unreached or args.report else args.decisions
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"curves: {out / 'curves.png'}  summary: {out / 'summary.json'}")
    final = {k: v for k, v in summary.items() if k != "runs"}
    print(json.dumps(final))
    return summary


if __name__ == "__main__":
    main()
