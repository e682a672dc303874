"""TMRL vs DSRL on fine-tuning tasks: success vs environment episodes over several seeds.

    python eval/compare_tmrl_dsrl.py                      # 5 seeds each, the embedded default (~2 h on 2 cores)
    python eval/compare_tmrl_dsrl.py --seeds 3 --decisions 400 --jobs 2
    python eval/compare_tmrl_dsrl.py --rl.observation.image_grid=1 --out outputs/cmp_mean_pooled
    python eval/compare_tmrl_dsrl.py --shift dim_light --out outputs/cmp_dim_light
    python eval/compare_tmrl_dsrl.py --suite eval/shift_split.json --role tune --seeds 3 --out outputs/suite_tune
    python eval/compare_tmrl_dsrl.py --suite eval/shift_split.json --role test --seeds 3 --out outputs/suite_test

Any further ``--rl.*`` argument is a recipe override (as in ``recipes/finetune_pick.py``) applied to
both agents' preset.

Both agents run the recipe's RL stage (``tmrl_vla.rl.run.run_rl``) with the same preset, one
seed at a time per job, each job in its own process with one thread; the measures, censoring and
bounds are :mod:`tmrl_vla.rl.comparison`'s (``--measure``: ``evaluation``, the deterministic agent
every ``--eval-every`` decisions, or ``training``, the rolling training success; both are in the
JSON). ``--extend-unreached`` continues only the runs that have not reached the threshold (in a
suite, the highest of ``--thresholds``); ``--report`` trains nothing and summarises the runs as
they stand. A run made with other settings than the ones given (agent config, env) is refused.

One task (``--shift``, a named context shift of the pick-cube env; default ``moved_camera``) writes
``curves.png`` and ``summary.json`` under ``--out`` and prints the summary as its last line.

A suite (``--suite SPLIT_FILE --role tune|test|all``) runs that comparison on every shift the split
file lists for the role, each into ``<out>/<shift>/`` as a one-task run would write it (so it
resumes shift by shift and run by run), then reports episodes to each of ``--thresholds`` per
shift and pooled over the shifts (:func:`tmrl_vla.rl.comparison.suite_summary`) in
``<out>/suite_summary.json`` and ``<out>/suite.png``, and prints that summary as its last line. The
split file is the pre-registration, written before any result:
``{"tune": ["moved_camera", ...], "test": [...], "notes": "..."}``; tune on the ``tune`` shifts and
run ``--role test`` once, at the end. The same command with ``--report`` added writes the summary
and figures again from the runs as they stand, training nothing; while a suite is still running, its
report covers the shifts whose runs are all complete and names the others. ``--archive DIR`` copies
each complete run's metrics (gzipped) and env record to ``DIR/<shift>/<agent>/seed<k>/``, without
checkpoints: a report with ``--out DIR`` then reads them there. With ``--archive``, a run that
``--out`` does not hold but the archive holds finished at this length is copied back from it
first (and said so), so a suite resumes from its archive after its ``--out`` is gone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)

DEFAULT_SHIFT = "moved_camera"
DEFAULT_THRESHOLD = 0.8
DEFAULT_SUITE_THRESHOLDS = (0.5, 0.8)


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
    parser.add_argument("--shift", default=None, help=f"the task: a named context shift (default {DEFAULT_SHIFT})")
    parser.add_argument("--suite", default=None, metavar="SPLIT_FILE", help="run every shift of --role in this file")
    parser.add_argument("--role", choices=("tune", "test", "all"), default=None, help="which shifts of --suite")
    parser.add_argument("--threshold", type=float, default=None, help=f"one task (default {DEFAULT_THRESHOLD})")
    parser.add_argument(
        "--thresholds",
        default=None,
        help="a suite's success thresholds, comma-separated (default "
        + ",".join(map(str, DEFAULT_SUITE_THRESHOLDS))
        + ")",
    )
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
        "--demo-episodes",
        type=int,
        default=None,
        help="scripted-expert demonstrations of each run's shift in both agents' replay, recorded once into "
        "the cache (--rl.demos.* sets how they are used); default: the recipe's --task_demos; 0: none, "
        "the preset of the results measured before them",
    )
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
    parser.add_argument(
        "--archive",
        default=None,
        metavar="DIR",
        help="copy each complete run's metrics and env record (no checkpoints) to DIR/<shift>/<agent>/seed<k>",
    )
    args, overrides = parser.parse_known_args(argv)
    if any(not o.startswith("--rl.") for o in overrides):
        parser.error(f"unknown arguments {overrides}: only --rl.* recipe overrides are passed through")
    resolve_tasks(parser, args)
    if args.demo_episodes is None:  # the recipe's
        from tmrl_vla.finetune import FinetuneConfig

        args.demo_episodes = FinetuneConfig().task_demos
    return args, overrides


def resolve_tasks(parser: argparse.ArgumentParser, args) -> None:
    """Set ``args.shifts`` and ``args.thresholds`` (a list of floats) from one task's flags or a suite's."""
    from tmrl_vla.envs.pick_cube import SHIFTS  # read now: shifts may be added after this was written
    from tmrl_vla.rl.comparison import read_split, role_shifts

    if args.suite is None:
        if args.role is not None or args.thresholds is not None:
            parser.error("--role and --thresholds belong to a suite: give --suite SPLIT_FILE (or --threshold)")
        args.shift = args.shift or DEFAULT_SHIFT
        if args.shift not in SHIFTS:
            parser.error(f"unknown --shift {args.shift!r}; known shifts: {', '.join(sorted(SHIFTS))}")
        args.shifts = [args.shift]
        args.thresholds = [DEFAULT_THRESHOLD if args.threshold is None else args.threshold]
        return
    if args.shift is not None or args.threshold is not None:
        parser.error("--shift and --threshold are for one task; a suite takes its shifts from --suite, --thresholds")
    if args.role is None:
        parser.error("--suite needs --role tune, test or all")
    try:
        args.shifts = role_shifts(read_split(args.suite, SHIFTS), args.role)
    except ValueError as e:
        parser.error(str(e))
    text = args.thresholds or ",".join(map(str, DEFAULT_SUITE_THRESHOLDS))
    try:
        args.thresholds = sorted({float(t) for t in text.split(",")})
    except ValueError:
        parser.error(f"--thresholds must be comma-separated numbers, got {text!r}")
    if not all(0 < t <= 1 for t in args.thresholds):
        parser.error(f"--thresholds are success rates in (0, 1], got {text!r}")


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


def with_demos(rl, shift: str, args):
    """``rl`` with ``--demo-episodes`` expert demonstrations of ``shift`` in its replay (recorded into
    the asset cache the first time); ``rl`` itself without them, or for a report."""
    if not args.demo_episodes or args.report:
        return rl
    from tmrl_vla.assets import with_task_demos
    from tmrl_vla.cache import AssetCache
    from tmrl_vla.envs.spec import EnvSpec

    return with_task_demos(rl, EnvSpec(shift=shift), args.demo_episodes, AssetCache(args.cache_dir))


def run_all(jobs: list, processes: int, report: bool) -> list[dict]:
    """Every job's result, in order; ``processes`` at once (a report only reads files: in this one)."""
    if processes > 1 and not report:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(processes, maxtasksperchild=1) as pool:
            # imap: a failing run raises as soon as the runs before it are done, not after all of them
            return list(pool.imap(run_job, jobs, chunksize=1))
    return [run_job(job) for job in jobs]


def write_comparison(out: Path, results: list[dict], args, threshold: float) -> dict:
    """One task's ``curves.png`` and ``summary.json`` in ``out``; returns the summary."""
    from tmrl_vla.metrics import read_metrics
    from tmrl_vla.rl.comparison import metrics_file, summarise
    from tmrl_vla.rl.curves import plot_learning_curve

    runs = {a: [metrics_file(out / a / f"seed{s}") for s in range(args.seeds)] for a in ("tmrl", "dsrl")}
    curves = {a: [read_metrics(path) for path in paths] for a, paths in runs.items()}
    plot_learning_curve(curves, out / "curves.png", threshold=threshold)
    summary = summarise(results, threshold) | {"measure": args.measure, "runs": results}
    # with --extend-unreached or --report the runs' lengths can differ: list them
    lengths = sorted({r["decisions"] for r in results})
    summary["decisions_per_run"] = lengths if args.extend_unreached or args.report else args.decisions
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"curves: {out / 'curves.png'}  summary: {out / 'summary.json'}")
    return summary


def archived_dir(args, shift: str, job) -> Path:
    """Where ``--archive`` keeps ``job``'s run: ``DIR/<shift>/<agent>/seed<k>`` (one task: no shift)."""
    run = Path(job.run_dir)
    return Path(args.archive) / (shift if args.suite else "") / run.parent.name / run.name


def main(argv: list[str] | None = None) -> dict:
    args, overrides = parse(argv)
    from tmrl_vla.assets import default_policy_and_adapter
    from tmrl_vla.envs.spec import EnvSpec
    from tmrl_vla.rl.comparison import archive_run, comparison_runs, plot_suite, restore_archived, suite_summary

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policy, adapter = args.policy, args.adapter
    if policy is None and not args.report:  # a report trains nothing: no assets needed
        policy, adapter = default_policy_and_adapter(args.cache_dir)
    # a suite's runs are settled (--extend-unreached) and drawn against its highest threshold
    threshold = max(args.thresholds)
    dirs = {shift: out / shift for shift in args.shifts} if args.suite else {args.shift: out}
    rl = rl_config(args, overrides)
    jobs = {
        shift: comparison_runs(
            with_demos(rl, shift, args),
            args.seeds,
            directory,
            env=EnvSpec(shift=shift, episode_length=args.episode_length),
            policy=policy,
            adapter=adapter,
            threshold=threshold,
            thresholds=tuple(args.thresholds) if args.suite else (),
            measure=args.measure,
            extend_unreached=args.extend_unreached,
            report=args.report,
            skip_missing=bool(args.suite and args.report),
        )
        for shift, directory in dirs.items()
    }
    if args.archive and not args.report:
        for shift, shift_jobs in jobs.items():
            for job in shift_jobs:
                if restore_archived(archived_dir(args, shift, job), job.run_dir, job.config.total_decisions):
                    print(f"restored from the archive: {job.run_dir}")
    # all shifts' runs in one pool, shift after shift: --jobs stays busy and the first shifts finish first
    results = iter(run_all([job for shift_jobs in jobs.values() for job in shift_jobs], args.jobs, args.report))
    by_shift = {shift: [next(results) for _ in shift_jobs] for shift, shift_jobs in jobs.items()}
    if args.archive:
        for shift, shift_jobs in jobs.items():
            for job, result in zip(shift_jobs, by_shift[shift], strict=True):
                if result["complete"]:
                    archive_run(job.run_dir, archived_dir(args, shift, job))
    # a suite's interim report: only the shifts whose runs are all complete
    left_out = {
        shift: f"{sum(r['complete'] for r in results)} of {len(results)} runs complete"
        for shift, results in by_shift.items()
        if args.suite and not all(r["complete"] for r in results)
    }
    for shift, why in left_out.items():
        print(f"left out of the report: {shift} ({why})")
        del by_shift[shift], dirs[shift]
    if args.suite and not by_shift:
        print(json.dumps({"left_out": left_out}))
        return {"left_out": left_out}
    summaries = {shift: write_comparison(dirs[shift], by_shift[shift], args, threshold) for shift in dirs}
    if not args.suite:
        summary = summaries[args.shift]
        print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))
        return summary
    suite = {"split_file": args.suite, "role": args.role, "measure": args.measure, "seeds": args.seeds}
    suite |= suite_summary(by_shift, args.thresholds) | {"left_out": left_out}
    (out / "suite_summary.json").write_text(json.dumps(suite, indent=2))
    plot_suite(suite, out / "suite.png")
    print(f"suite: {out / 'suite_summary.json'}  figure: {out / 'suite.png'}")
    print(json.dumps(suite))
    return suite


if __name__ == "__main__":
    main()
