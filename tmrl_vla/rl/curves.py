"""Learning curves: reading a run's ``metrics.jsonl``, episodes to a success threshold, plots.

The x axis is *environment episodes* (all processes together), the unit a robot user pays in. The
training success rate is the rolling rate over the last ``success_window`` finished training
episodes (``rollout/success_recent``); evaluation points (deterministic high-level policy, fresh
seeds) are drawn on top where present.
"""

from __future__ import annotations

import math
from pathlib import Path


def episodes_to_threshold(
    rows: list[dict], threshold: float = 0.8, *, min_episodes: int = 1, measure: str = "training"
) -> int | None:
    """Training episodes when the success rate first reaches ``threshold``; None if it never does.

    ``measure="training"``: the rolling rate of the training episodes themselves, counted once
    ``min_episodes`` have finished (a window of 3 lucky episodes does not count); it includes the
    exploration noise. ``measure="evaluation"``: the deterministic high-level policy's success on
    fresh evaluation episodes (rows with ``eval/success_rate``), i.e. what a user would deploy at
    that point; evaluation episodes are not counted as training episodes.
    """
    if measure not in ("training", "evaluation"):
        raise ValueError(f"measure must be 'training' or 'evaluation', got {measure!r}")
    for row in rows:
        if measure == "evaluation":
            if row.get("eval/success_rate", -1.0) >= threshold:
                return int(row["rollout/episodes"])
        elif row["rollout/episodes"] >= min_episodes and row["rollout/success_recent"] >= threshold:
            return int(row["rollout/episodes"])
    return None


def plot_learning_curve(
    runs: dict[str, list | list[list]], path: str | Path, *, threshold: float | None = 0.8, min_episodes: int = 10
) -> None:
    """One line per named run (or one line per seed, in one colour, for a list of runs): rolling
    training success vs episodes from ``min_episodes`` on (a rate over 1-2 episodes is noise), with
    evaluation points as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"tmrl": "#dd8452", "dsrl": "#4c72b0"}
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for i, (name, value) in enumerate(runs.items()):
        seeds = value if value and isinstance(value[0], list) else [value]
        colour = colours.get(name, f"C{i + 2}")
        for j, rows in enumerate(seeds):
            if not rows:
                continue
            shown = [r for r in rows if r["rollout/episodes"] >= min_episodes]
            xs = [r["rollout/episodes"] for r in shown]
            ys = [r["rollout/success_recent"] for r in shown]
            ax.plot(xs, ys, color=colour, alpha=0.9 if len(seeds) == 1 else 0.45, label=name if j == 0 else None)
            ev = [(r["rollout/episodes"], r["eval/success_rate"]) for r in rows if "eval/success_rate" in r]
            if ev:
                ax.scatter(*zip(*ev, strict=True), color=colour, s=14, marker="o", zorder=3)
    if threshold is not None:
        ax.axhline(threshold, color="#777777", lw=0.8, ls="--")
    ax.set_xlabel("environment episodes (all processes)")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("rolling training success (lines), deterministic evaluation (dots)", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_ci95(values: list[float]) -> tuple[float, float, float]:
    """Mean and a t-based 95% interval (two-sided) for a handful of seeds."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan, math.nan
    from scipy import stats

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half
