"""Two settings of the same agents, paired run by run: what the first training episodes bring.

    python eval/compare_arms.py --arm preset=outputs/start_base --arm prior=outputs/start_prior \
        [--episodes 150] [--decisions D] [--out outputs/compare_arms]

Each ``--arm NAME=DIR`` is the ``--out`` of one ``eval/compare_tmrl_dsrl.py`` suite (or of
``--archive``), run with the same shifts, seeds and length but other ``--rl.*`` settings; the first
arm is the reference. Runs are paired by (shift, agent, seed), so each pair saw the same initial
states and the same env seeds, and differences are read within pairs.

For a robot, every training episode costs a person's time, so the measures are per episode:

* ``success_first``: the training success rate over the first ``--episodes`` episodes (what the
  person sees while it learns; the first row at or past that many episodes is read);
* ``eval_last``: the deterministic agent's last evaluation (``eval/success_rate``); with
  ``--decisions D``, its last evaluation at or before decision D, so that arms of different lengths
  (a short check against a suite's archived runs) are read at the same point;
* ``eval_within`` (with ``--eval-within E``): its last evaluation made within the first E training
  episodes, for arms whose decisions buy different numbers of episodes (e.g. other actions per
  chunk), so that each is read after about the same number of a person's episodes (choose E at or
  past the arms' last evaluation rounds that should meet: a run that ended before E is read at its last).

Per agent: the mean of each measure per arm, and the mean paired difference to the reference
arm with a bootstrap 95% interval over pairs. Writes ``summary.json`` and ``curves.png`` (rolling
training success against episodes, the mean over runs per arm and agent) under ``--out``; the
last line printed is the summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from tmrl_vla.metrics import read_metrics
from tmrl_vla.rl.comparison import metrics_file

RUN_DIR = re.compile(r"(?P<shift>[^/]+)/(?P<agent>tmrl|dsrl)/seed(?P<seed>\d+)$")


def find_runs(root: Path) -> dict[tuple[str, str, int], list[dict]]:
    """(shift, agent, seed) -> metrics rows, for every run under a suite's ``--out``."""
    runs = {}
    for seed_dir in sorted(root.glob("*/*/seed*")):
        match = RUN_DIR.search(seed_dir.relative_to(root).as_posix())
        path = metrics_file(seed_dir)
        if match and path.exists():
            runs[(match["shift"], match["agent"], int(match["seed"]))] = read_metrics(path)
    return runs


def success_first(rows: list[dict], episodes: int) -> float | None:
    """Training successes per episode over the first ``episodes`` (None: the run is shorter)."""
    row = next((r for r in rows if r["rollout/episodes"] >= episodes), None)
    return None if row is None else row["rollout/successes"] / row["rollout/episodes"]


def eval_last(rows: list[dict], decisions: int | None = None) -> float | None:
    """The last evaluation, at or before ``decisions`` when given (None: the run stops short of it)."""
    if decisions is not None and (not rows or rows[-1]["decision"] < decisions):
        return None
    evals = [
        r["eval/success_rate"]
        for r in rows
        if "eval/success_rate" in r and (decisions is None or r["decision"] <= decisions)
    ]
    return evals[-1] if evals else None


def paired_difference(a: list[float], b: list[float], *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Mean of b - a over pairs, with a bootstrap 95% interval over pairs."""
    diff = np.asarray(b) - np.asarray(a)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "ci95": [float(low), float(high)], "pairs": len(diff)}


def eval_within(rows: list[dict], episodes: int) -> float | None:
    """The last evaluation made while the run had played at most ``episodes`` training episodes (a run
    that ended before them: its last; None: it made none)."""
    evals = [r["eval/success_rate"] for r in rows if "eval/success_rate" in r and r["rollout/episodes"] <= episodes]
    return evals[-1] if evals else None


def compare(arms: dict[str, Path], episodes: int, decisions: int | None = None, within: int | None = None) -> dict:
    runs = {name: find_runs(root) for name, root in arms.items()}
    reference, *others = arms
    measures = {
        "success_first": lambda rows: success_first(rows, episodes),
        "eval_last": lambda rows: eval_last(rows, decisions),
    }
    if within is not None:
        measures["eval_within"] = lambda rows: eval_within(rows, within)
    out: dict = {"episodes": episodes, "decisions": decisions, "reference": reference, "agents": {}}
    if within is not None:
        out["eval_within_episodes"] = within
    for agent in ("tmrl", "dsrl"):
        keys = sorted(k for k in runs[reference] if k[1] == agent and all(k in runs[o] for o in others))
        per_agent: dict = {"pairs": [f"{s}/seed{k}" for s, _, k in keys]}
        for measure, read in measures.items():
            values = {name: [read(runs[name][k]) for k in keys] for name in arms}
            usable = [i for i in range(len(keys)) if all(values[n][i] is not None for n in arms)]
            entry = {name: _mean([values[name][i] for i in usable]) for name in arms}
            for other in others:
                a, b = ([values[n][i] for i in usable] for n in (reference, other))
                entry[f"{other} - {reference}"] = paired_difference(a, b) if usable else None
            entry["runs"] = len(usable)
            per_agent[measure] = entry
        out["agents"][agent] = per_agent
    return out


def plot(arms: dict[str, Path], path: Path, episodes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    grid = np.arange(0, 2 * episodes + 1, 5)
    for ax, agent in zip(axes, ("tmrl", "dsrl"), strict=True):
        for name, root in arms.items():
            curves = []
            for (_, a, _), rows in find_runs(root).items():
                if a == agent:
                    ep = np.array([r["rollout/episodes"] for r in rows])
                    curves.append(np.interp(grid, ep, [r["rollout/success_recent"] for r in rows], right=np.nan))
            if curves:  # the mean stops where the shortest run does: no tail drawn by a few long runs
                ax.plot(grid, np.mean(curves, axis=0), label=f"{name} ({len(curves)} runs)")
        ax.axvline(episodes, color="grey", lw=0.8, ls=":")
        ax.set(title=agent.upper(), xlabel="training episodes")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("rolling training success (mean over runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arm", action="append", required=True, metavar="NAME=DIR", help="first: the reference")
    parser.add_argument("--episodes", type=int, default=150, help="training episodes success_first covers")
    parser.add_argument("--decisions", type=int, default=None, help="read eval_last at or before this decision")
    parser.add_argument(
        "--eval-within", type=int, default=None, metavar="E", help="also read the last evaluation within E episodes"
    )
    parser.add_argument("--out", default="outputs/compare_arms")
    args = parser.parse_args(argv)
    arms = {}
    for text in args.arm:
        name, sep, root = text.partition("=")
        if not sep or not name or not Path(root).is_dir():
            parser.error(f"--arm takes NAME=DIR with an existing DIR, got {text!r}")
        arms[name] = Path(root)
    if len(arms) < 2:
        parser.error("give at least two --arm (the first is the reference)")
    summary = compare(arms, args.episodes, args.decisions, args.eval_within)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(arms, out / "curves.png", args.episodes)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
