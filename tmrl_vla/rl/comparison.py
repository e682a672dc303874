"""TMRL vs DSRL over several seeds: episodes to a success threshold, censoring, bootstrap intervals.

Each (agent, seed) is one :func:`tmrl_vla.rl.run.run_rl` run in its own directory; runs resume from
their checkpoints, so an interrupted comparison continues where it stopped. Episodes to threshold:
the training episodes when the success rate first reaches it, by one of two measures
(:func:`~tmrl_vla.rl.curves.episodes_to_threshold`): ``evaluation``, the deterministic agent on the
fixed evaluation episodes (what a user deploys), or ``training``, the rolling rate over the last
``success_window`` training episodes (exploration included). A run that never reaches it counts as
*censored* at its total episodes (a lower bound of its true value), which makes the ratio a bound
too; the summary says which.

A *suite* runs the comparison on several fine-tuning tasks (named context shifts), one directory
per shift, and pools them (:func:`suite_summary`): the pooled TMRL / DSRL ratio is the geometric
mean of the per-shift ratios, with a bootstrap over shifts and over runs within each shift (see
:func:`pooled_ratio_ci` for why). Which shifts a suite covers comes from a split file written before
any result is seen (:func:`read_split`), so the shifts used to tune the method are never the ones
it is judged on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tmrl_vla.config_tools import config_differences
from tmrl_vla.envs.spec import EnvSpec
from tmrl_vla.metrics import read_metrics
from tmrl_vla.rl import checkpoint, run
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.curves import episodes_to_threshold, mean_ci95

AGENTS = ("tmrl", "dsrl")
MEASURES = ("evaluation", "training")
ROLES = ("tune", "test", "all")
# The env a run was made on: its checkpoint holds the agent's config but not the env, and a finished
# run is read back without building one, so nothing else would notice a run of another shift.
ENV_FILE = "env.json"


@dataclass(frozen=True)
class ComparisonRun:
    config: TMRLConfig  # the agent's kind and the seed are in it
    env: EnvSpec
    run_dir: str
    policy: str | None  # None only for a report, which trains nothing
    adapter: str | None
    threshold: float = 0.8
    measure: str = "evaluation"
    # Continue only a run that has not reached the threshold yet (by `measure`).
    extend_unreached: bool = False
    # Train nothing: summarise the run as it stands.
    report: bool = False
    # Further thresholds whose episodes the result lists (by `measure`), for a suite's report.
    thresholds: tuple[float, ...] = ()
    # A report reads a run not made yet as {"complete": False} instead of refusing (a suite's
    # interim report leaves out the shifts whose runs are not all complete).
    skip_missing: bool = False


def metrics_file(run_dir: str | Path) -> Path:
    """A run's ``metrics.jsonl``, or its archived ``metrics.jsonl.gz`` (:func:`archive_run`) when
    only that is there."""
    plain = Path(run_dir) / "metrics.jsonl"
    archived = plain.with_name("metrics.jsonl.gz")
    return archived if archived.exists() and not plain.exists() else plain


def archive_run(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy what a report needs of a run (its metrics, gzipped, and the env record) to ``dest``,
    leaving out checkpoints: a finished comparison kept beside its write-up, and reportable there."""
    import gzip
    import shutil

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    source = metrics_file(run_dir)
    data = source.read_bytes()
    (dest / "metrics.jsonl.gz").write_bytes(data if source.suffix == ".gz" else gzip.compress(data, mtime=0))
    if (Path(run_dir) / ENV_FILE).exists():
        shutil.copyfile(Path(run_dir) / ENV_FILE, dest / ENV_FILE)
    return dest


def restore_archived(archived: str | Path, run_dir: str | Path, total_decisions: int) -> bool:
    """Copy a run finished at ``total_decisions`` back from its archive (:func:`archive_run`) into
    ``run_dir`` when ``run_dir`` holds nothing of it yet, so that a suite whose ``--out`` was lost
    resumes with what its archive kept instead of training those runs again. True when restored."""
    source = metrics_file(archived)
    if metrics_file(run_dir).exists() or checkpoint.latest_checkpoint(run_dir) is not None or not source.exists():
        return False
    rows = read_metrics(source)
    if not rows or rows[-1].get("decision") != total_decisions:  # another length: not this run
        return False
    archive_run(archived, run_dir)  # the same copy the other way: gzipped metrics and the env record
    return True


def comparison_runs(rl: TMRLConfig, seeds: int, out: str | Path, **common) -> list[ComparisonRun]:
    """Both agents on seeds 0 .. seeds - 1, in ``<out>/<agent>/seed<k>``; ``common``: the other fields."""
    runs = []
    for seed in range(seeds):
        for kind in AGENTS:
            config = dataclasses.replace(rl, agent=dataclasses.replace(rl.agent, kind=kind), seed=seed)
            runs.append(ComparisonRun(config=config, run_dir=str(Path(out) / kind / f"seed{seed}"), **common))
    return runs


def run_or_read(job: ComparisonRun) -> dict:
    """Train the run to its length (unless settled or a report), then read its result.

    A run that already holds a checkpoint is refused if it was made with other settings (the
    agent's config, its length aside, or the env): a finished run is only read, so without this
    check a changed setting would silently report the old run under the new one.
    """
    cfg = job.config
    metrics = metrics_file(job.run_dir)
    rows = read_metrics(metrics) if metrics.exists() else []
    if job.report and job.skip_missing and not rows:
        return {"agent": cfg.agent.kind, "seed": cfg.seed, "complete": False, "decisions": 0}
    if job.report and not metrics.exists():
        raise FileNotFoundError(f"--report summarises existing runs, and {job.run_dir} has no metrics.jsonl")
    if not job.report:  # a report reads the runs whatever made them
        refuse_other_settings(job)
    finished = bool(rows) and rows[-1].get("decision") == cfg.total_decisions
    # a run that already reached the threshold has its answer: continuing it changes nothing measured
    settled = job.extend_unreached and _reached(rows, job)[job.measure] is not None
    if not (finished or settled or job.report):
        if checkpoint.latest_checkpoint(job.run_dir) is None:  # a fresh start: record what it runs on
            Path(job.run_dir).mkdir(parents=True, exist_ok=True)
            (Path(job.run_dir) / ENV_FILE).write_text(json.dumps(_env_record(job.env), indent=2))
        run.run_rl(
            cfg,
            policy=job.policy,
            adapter=job.adapter,
            env=job.env,
            run_dir=job.run_dir,
            resume=True,
            log=lambda *_: None,
        )
        rows = read_metrics(metrics)
        finished = rows[-1].get("decision") == cfg.total_decisions
    reached = _reached(rows, job)
    result = {
        "agent": cfg.agent.kind,
        "seed": cfg.seed,
        # finished, or settled: reached the threshold in a run that continues only unreached ones
        "complete": finished or (job.extend_unreached and reached[job.measure] is not None),
        "episodes_to_threshold": reached[job.measure],
        "episodes_to_threshold_by_measure": reached,
        "total_episodes": rows[-1]["rollout/episodes"],
        "decisions": rows[-1]["decision"],
        "training_success_rate": rows[-1]["rollout/successes"] / max(rows[-1]["rollout/episodes"], 1),
        "final_success_recent": rows[-1]["rollout/success_recent"],
        "final_eval_success": next((r["eval/success_rate"] for r in reversed(rows) if "eval/success_rate" in r), None),
    }
    if job.thresholds:
        window = cfg.success_window
        result["episodes_to_each_threshold"] = {
            threshold_key(t): episodes_to_threshold(rows, t, min_episodes=window, measure=job.measure)
            for t in sorted({*job.thresholds, job.threshold})
        }
    return result


def refuse_other_settings(job: ComparisonRun) -> None:
    """Raise if the run in ``job.run_dir`` was made with another config (its length aside) or env.

    The config is its newest checkpoint's; the env is the one recorded when it started (a run
    started before that record existed is checked on its config only)."""
    run_dir = Path(job.run_dir)
    latest = checkpoint.latest_checkpoint(run_dir)
    if latest is None:
        return
    saved = json.loads((latest / "config.json").read_text())
    defaults = dataclasses.asdict(TMRLConfig())
    differ = config_differences(saved, dataclasses.asdict(job.config), defaults=defaults)
    if (run_dir / ENV_FILE).exists():
        saved_env = json.loads((run_dir / ENV_FILE).read_text())
        differ += config_differences({"env": saved_env}, {"env": _env_record(job.env)}, ignore=())
    if differ:
        raise ValueError(
            f"{run_dir} holds a run made with other settings; fields that differ (saved vs now): "
            + ", ".join(differ)
            + ". Choose another --out, or give the settings it was made with"
        )


def _env_record(env: EnvSpec) -> dict:
    """The env as JSON values (a tuple as the list it is saved as), so records compare equal."""
    return json.loads(json.dumps(dataclasses.asdict(env)))


def _reached(rows: list[dict], job: ComparisonRun) -> dict:
    window = job.config.success_window
    return {m: episodes_to_threshold(rows, job.threshold, min_episodes=window, measure=m) for m in MEASURES}


def threshold_key(threshold: float) -> str:
    """A threshold as a JSON key: ``0.5`` -> ``"0.5"`` (the shortest form, so 0.5 and 0.50 agree)."""
    return f"{threshold:g}"


def counted_episodes(runs: list[dict]) -> list[float]:
    """Each run's episodes to threshold, a censored run's (None) at its total episodes."""
    return [r["episodes_to_threshold"] or r["total_episodes"] for r in runs]


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
    """Per agent: mean episodes to threshold (censored runs at their totals) with t-intervals over
    seeds, censored counts, success per training episode; then TMRL / DSRL with its bootstrap
    interval and whether it is exact or a bound."""
    # Names fixed by the benchmark contract use "80" whatever the threshold; it is recorded beside them.
    out: dict = {"tmrl_episodes_to_80": None, "dsrl_episodes_to_80": None}
    per_agent: dict[str, list[float]] = {}
    for agent in AGENTS:
        runs = [r for r in results if r["agent"] == agent]
        values = counted_episodes(runs)
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
    return out | _censoring(out)


def _censoring(out: dict) -> dict:
    """A censored run counts at its total episodes, a lower bound of its true episodes-to-threshold;
    so censored DSRL runs make the ratio an upper bound, censored TMRL runs a lower bound, and both
    together leave it unbounded either way."""
    censored = tuple(agent for agent in AGENTS if out[f"{agent}_censored"])
    bound = {(): "exact", ("dsrl",): "upper", ("tmrl",): "lower"}.get(censored, "none")
    if not censored:
        return {"ratio_bound": bound}
    meaning = {
        "upper": "the ratio is an upper bound (TMRL needs at most this fraction of DSRL's episodes)",
        "lower": "the ratio is a lower bound",
        "none": "the ratio bounds nothing (both agents have censored runs)",
    }[bound]
    note = (
        "censored runs never reached the threshold and count at their total episodes, so their "
        f"agent's episodes are lower bounds; {meaning}"
    )
    return {"ratio_bound": bound, "note": note}


# ------------------------------------------------------------------------------ suites of shifts


def read_split(path: str | Path, known: Iterable[str]) -> dict[str, list[str]]:
    """The split file's ``{"tune": [...], "test": [...]}`` after checking it, or a ValueError that
    names the file and what is wrong.

    The file is the pre-registration: shifts for tuning and shifts only for testing, fixed before
    any result is read. So a shift may not be in both lists (a test shift seen while tuning is no
    test), neither list may be empty, and every name must be a known shift (``known``: the env's
    ``SHIFTS`` as they are when this runs). ``notes`` (free text) is allowed beside them, nothing else:
    a misspelt key would otherwise silently leave a list out.
    """
    path = Path(path)
    try:
        split = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"split file {path}: cannot be read as JSON ({e})") from None
    if not isinstance(split, dict):
        raise ValueError(f'split file {path}: expected an object {{"tune": [...], "test": [...], "notes": "..."}}')
    if extra := sorted(set(split) - {"tune", "test", "notes"}):
        raise ValueError(f"split file {path}: unknown keys {extra}; allowed: tune, test, notes")
    known = sorted(known)
    lists = {}
    for role in ("tune", "test"):
        names = split.get(role)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError(f"split file {path}: {role!r} must be a non-empty list of shift names, got {names!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"split file {path}: {role!r} lists a shift more than once: {names}")
        if unknown := [n for n in names if n not in known]:
            raise ValueError(f"split file {path}: unknown shifts in {role!r}: {unknown}; known: {', '.join(known)}")
        lists[role] = names
    if both := [n for n in lists["tune"] if n in lists["test"]]:
        raise ValueError(f"split file {path}: shifts in both 'tune' and 'test': {both}")
    return lists


def role_shifts(split: dict[str, list[str]], role: str) -> list[str]:
    """The shifts a role covers, in the file's order (``all``: the tuning shifts, then the test ones)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    return split["tune"] + split["test"] if role == "all" else list(split[role])


def at_threshold(results: list[dict], threshold: float) -> list[dict]:
    """The run results with ``episodes_to_threshold`` at ``threshold``, one of the thresholds they
    were read with (``ComparisonRun.thresholds``), so :func:`summarise` applies unchanged."""
    key = threshold_key(threshold)
    out = []
    for r in results:
        each = r.get("episodes_to_each_threshold", {})
        if key not in each:
            raise KeyError(
                f"the {r['agent']} run of seed {r['seed']} has no episodes to threshold {key}; "
                f"it was read with thresholds {sorted(each)}"
            )
        out.append(r | {"episodes_to_threshold": each[key]})
    return out


def shift_summary(results: list[dict], threshold: float) -> dict:
    """One shift at one threshold: per agent the mean episodes (censored runs at their totals), its
    t-interval and how many runs are censored; the ratio with its bootstrap interval and bound
    (all as :func:`summarise` computes them)."""
    s = summarise(at_threshold(results, threshold), threshold)
    out: dict = {
        agent: {
            "mean_episodes": s[f"{agent}_episodes_to_80"],
            "ci95": s[f"{agent}_ci95"],
            "censored": s[f"{agent}_censored"],
            "runs": sum(r["agent"] == agent for r in results),
        }
        for agent in AGENTS
    }
    out |= {k: s[k] for k in ("ratio", "ratio_ci95", "ratio_bound", "note") if k in s}
    return out


def geometric_mean_ratio(per_shift: dict[str, tuple[list[float], list[float]]]) -> float:
    """exp(mean over shifts of log(mean(tmrl) / mean(dsrl))): ``per_shift`` maps each shift to its
    (TMRL, DSRL) episodes per run."""
    logs = [math.log(_mean(a) / _mean(b)) for a, b in per_shift.values()]
    return math.exp(sum(logs) / len(logs))


def pooled_ratio_ci(
    per_shift: dict[str, tuple[list[float], list[float]]], *, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of :func:`geometric_mean_ratio`: each resample draws as many
    shifts as there are, with replacement, then within each drawn shift its TMRL and its DSRL runs
    with replacement.

    Why the geometric mean of per-shift ratios rather than one ratio of means pooled over all runs:
    shifts differ in how many episodes they need by far more than the agents differ, and pooled
    means would let the slowest shift decide the answer; on a log scale every shift counts the
    same, the result does not change when one shift's episodes are scaled for both agents, and
    swapping the agents gives exactly the reciprocal. Why shifts are resampled too: the split holds
    shifts out so the claim can be about fine-tuning tasks in general, not only the ones run, so how
    much the ratio varies from shift to shift belongs in the interval. With a few shifts that
    interval is wide (with two, it spans roughly the two shifts' ratios), which is the honest
    answer; the per-shift intervals show the seed-to-seed part alone.
    """
    rng = random.Random(seed)
    shifts = list(per_shift.values())
    stats = []
    for _ in range(resamples):
        total = 0.0
        for a, b in (rng.choice(shifts) for _ in shifts):
            ra = sum(rng.choice(a) for _ in a) / len(a)
            rb = sum(rng.choice(b) for _ in b) / len(b)
            total += math.log(ra / rb)
        stats.append(math.exp(total / len(shifts)))
    stats.sort()
    return stats[int(0.025 * resamples)], stats[int(0.975 * resamples) - 1]


def pool_shifts(
    results_by_shift: dict[str, list[dict]], threshold: float, *, resamples: int = 10_000, seed: int = 0
) -> dict:
    """All shifts at one threshold: per agent the mean over shifts of its per-shift mean episodes
    (each shift weighted alike, as in the ratio) and its censored runs in all; the geometric-mean
    ratio with :func:`pooled_ratio_ci`'s interval, and its bound.

    The bound follows :func:`summarise`'s rule on the censored runs of all shifts together: the
    geometric mean rises with each shift's ratio, so if only DSRL runs are censored (anywhere) every
    shift's ratio is exact or an upper bound and so is their mean; only TMRL runs, a lower bound;
    both agents (in one shift or in different ones), no bound either way."""
    per_shift: dict[str, tuple[list[float], list[float]]] = {}
    censored = dict.fromkeys(AGENTS, 0)
    runs = dict.fromkeys(AGENTS, 0)
    for shift, results in results_by_shift.items():
        at = at_threshold(results, threshold)
        by_agent = [[r for r in at if r["agent"] == agent] for agent in AGENTS]
        if not all(by_agent):
            raise ValueError(f"shift {shift!r} needs runs of both agents, got {[len(x) for x in by_agent]}")
        for agent, agent_runs in zip(AGENTS, by_agent, strict=True):
            censored[agent] += sum(r["episodes_to_threshold"] is None for r in agent_runs)
            runs[agent] += len(agent_runs)
        per_shift[shift] = (counted_episodes(by_agent[0]), counted_episodes(by_agent[1]))
    for shift, (a, b) in per_shift.items():
        if min(a + b) <= 0:
            raise ValueError(f"shift {shift!r} has a run with no episodes: its ratio has no logarithm")
    out: dict = {
        agent: {
            "mean_episodes": _mean([_mean(v[i]) for v in per_shift.values()]),
            "censored": censored[agent],
            "runs": runs[agent],
        }
        for i, agent in enumerate(AGENTS)
    }
    out["ratio"] = geometric_mean_ratio(per_shift)
    # a single shift with a single run of an agent has nothing to resample: no interval, as in summarise
    lonely = len(per_shift) < 2 and any(len(x) < 2 for ab in per_shift.values() for x in ab)
    ci = (math.nan, math.nan) if lonely else pooled_ratio_ci(per_shift, resamples=resamples, seed=seed)
    out["ratio_ci95"] = list(ci)
    out["shifts"] = list(per_shift)
    return out | _censoring({f"{agent}_censored": censored[agent] for agent in AGENTS})


POOLING = (
    "per shift: mean episodes to threshold per agent (censored runs at their total episodes, lower "
    "bounds) and TMRL / DSRL as a ratio of means, bootstrap over seeds; pooled: the geometric mean "
    "of the per-shift ratios, 95% percentile bootstrap resampling shifts, then runs within each shift"
)


def suite_summary(results_by_shift: dict[str, list[dict]], thresholds: Iterable[float]) -> dict:
    """Per shift and pooled over all of ``results_by_shift``, for each threshold (keys as
    :func:`threshold_key`); NaN (no interval from one seed) becomes null, so the file is plain JSON."""
    thresholds = sorted(thresholds)
    summary = {
        "shifts": list(results_by_shift),
        "thresholds": thresholds,
        "pooling": POOLING,
        "per_shift": {
            shift: {threshold_key(t): shift_summary(results, t) for t in thresholds}
            for shift, results in results_by_shift.items()
        },
        "pooled": {threshold_key(t): pool_shifts(results_by_shift, t) for t in thresholds},
    }
    return _nan_to_none(summary)


def plot_suite(summary: dict, path: str | Path) -> None:
    """One column per threshold: mean episodes per agent and shift with their t-intervals (bars,
    censored runs counted above them), and below, TMRL / DSRL per shift and pooled with their
    bootstrap intervals on a log scale, a line at 1 (equal episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    colours = {"tmrl": "#dd8452", "dsrl": "#4c72b0"}
    keys = [threshold_key(t) for t in summary["thresholds"]]
    shifts = summary["shifts"]
    column = max(2.8, 1.1 * len(shifts))  # inches: room for the titles and censoring labels
    fig, axes = plt.subplots(2, len(keys), figsize=(1.4 + column * len(keys), 6.0), squeeze=False)
    for col, key in enumerate(keys):
        top, bottom = axes[0][col], axes[1][col]
        for i, agent in enumerate(AGENTS):
            xs = [s + (i - 0.5) * 0.38 for s in range(len(shifts))]
            stats = [summary["per_shift"][shift][key][agent] for shift in shifts]
            means = [st["mean_episodes"] for st in stats]
            top.bar(xs, means, width=0.38, color=colours[agent], label=agent)
            floored = [_floored_at_zero(st["ci95"]) for st in stats]
            top.errorbar(xs, means, yerr=_error_bars(means, floored), fmt="none", color="k")
            for x, mean, st in zip(xs, means, stats, strict=True):
                if st["censored"]:
                    label = f"{st['censored']}/{st['runs']}\ncensored"
                    top.annotate(label, (x, mean), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=6)
        top.set_xticks(range(len(shifts)), shifts, rotation=30, ha="right", fontsize=8)
        top.set_ylabel("episodes to threshold")
        top.set_title(f"success >= {key}", fontsize=9)
        top.margins(y=0.2)  # room for the censoring labels
        top.legend(fontsize=7)
        rows = [summary["per_shift"][shift][key] for shift in shifts] + [summary["pooled"][key]]
        ratios = [r["ratio"] for r in rows]
        xs = list(range(len(rows)))
        bottom.errorbar(
            xs[:-1],
            ratios[:-1],
            yerr=_error_bars(ratios[:-1], [r["ratio_ci95"] for r in rows[:-1]]),
            fmt="o",
            color="#555555",
            capsize=3,
        )
        bottom.errorbar(
            xs[-1:], ratios[-1:], yerr=_error_bars(ratios[-1:], [rows[-1]["ratio_ci95"]]), fmt="D", color="k", capsize=3
        )
        bottom.axhline(1.0, color="#777777", lw=0.8, ls="--")
        bottom.set_yscale("log")
        bottom.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        bottom.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        bottom.yaxis.set_minor_formatter(ticker.NullFormatter())
        low, high = bottom.get_ylim()
        if high / low < 6:  # too narrow for 1, 2, 5 to show more than one label: label 0.6, 0.7, ... too
            bottom.yaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
            bottom.tick_params(axis="y", which="minor", labelsize=7)
        bottom.set_title(f"TMRL / DSRL at >= {key} (95% bootstrap)", fontsize=8)
        bottom.set_xticks(xs, [*shifts, "pooled"], rotation=30, ha="right", fontsize=8)
        bottom.set_ylabel("episode ratio (< 1: TMRL fewer)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _floored_at_zero(interval: list | None) -> list | None:
    """An interval of episodes with its lower end raised to 0: a t-interval over three runs can
    reach below zero episodes, and the bar should stop where the count does. None ends pass through."""
    if not interval or None in interval:
        return interval
    return [max(interval[0], 0.0), interval[1]]


def _error_bars(centres: list[float], intervals: list) -> list[list[float]]:
    """Matplotlib's (below, above) distances; a missing interval (one seed) draws none."""
    below, above = [], []
    for c, ci in zip(centres, intervals, strict=True):
        lo, hi = ci if ci and None not in ci and not any(map(math.isnan, ci)) else (c, c)
        below.append(max(c - lo, 0.0))
        above.append(max(hi - c, 0.0))
    return [below, above]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _nan_to_none(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
