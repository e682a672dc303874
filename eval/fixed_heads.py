"""How far a *fixed* high-level action goes: random (z, sigma) settings, each held for whole episodes.

    python eval/fixed_heads.py                                   # TMRL and DSRL, 40 settings x 16 episodes each
    python eval/fixed_heads.py --agents dsrl --settings 20 --episodes 8 --recheck 48

Every setting is one z drawn uniformly in [-1, 1]^A (the first is z = 0) and, for TMRL, one sigma
drawn uniformly in [0, 1] (context noise as in CSP training, i.i.d. per token); it steers the frozen
policy for every decision of ``--episodes`` episodes on the same initial states (paired). DSRL's
settings run the plain BC policy (sigma 0), TMRL's the CSP adapter. The best settings are then
re-run on ``--recheck`` fresh initial states, since the best of many 16-episode scores is biased
upwards.

Why it matters: it measures what an RL agent can reach without reading the state at all, and how
rare such actions are in the action space the agent explores, i.e. how hard the search is. Writes a
JSON summary (every setting's score) and a histogram PNG, and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def sweep(kind: str, policy: str, adapter: str | None, envs, recheck_envs, args) -> dict:
    """Score ``args.settings`` random settings for one agent kind, then re-run its best 3 on fresh states."""
    from tmrl_vla.rl.actor import sigma_from_y
    from tmrl_vla.rl.analysis import random_settings, score_fixed
    from tmrl_vla.rl.run import load_frozen_policy

    csp, pre, post = load_frozen_policy(policy, adapter if kind == "tmrl" else None)
    action_dim = csp.base_policy.config.output_features["action"].shape[0]
    settings = random_settings(kind, args.settings, action_dim, torch.Generator().manual_seed(args.seed))
    rows = []
    for k, actions in enumerate(settings):
        wins, n = score_fixed(csp, pre, post, envs, actions, seed=10_000, n_exec=args.n_exec)
        sigma = float(sigma_from_y(actions["y"])) if "y" in actions else 0.0
        rows.append({"z": actions["z"][0].tolist(), "sigma": sigma, "success": wins / n})
        print(f"[{kind}] setting {k}: sigma {sigma:.2f}, success {wins}/{n}", flush=True)
    best = sorted(range(len(rows)), key=lambda i: -rows[i]["success"])[:3]
    for i in best:
        wins, n = score_fixed(csp, pre, post, recheck_envs, settings[i], seed=20_000, n_exec=args.n_exec)
        rows[i]["recheck_success"] = wins / n
    rates = [r["success"] for r in rows]
    return {
        "mean_success": sum(rates) / len(rates),
        "best_success": max(rates),
        "best_recheck_success": max(rows[i]["recheck_success"] for i in best),
        "fraction_at_least_0.5": sum(r >= 0.5 for r in rates) / len(rates),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="tmrl,dsrl")
    parser.add_argument("--settings", type=int, default=40)
    parser.add_argument("--episodes", type=int, default=16, help="episodes per setting (same initial states)")
    parser.add_argument("--recheck", type=int, default=48, help="fresh episodes for each agent's best 3 settings")
    parser.add_argument("--shift", default="moved_camera")
    parser.add_argument("--episode-length", type=int, default=None, help="override the env's (tests)")
    parser.add_argument("--n-exec", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--policy", default=None, help="LeRobot checkpoint (default: the embedded BC policy)")
    parser.add_argument("--adapter", default=None, help="its CSP adapter (default: the embedded one)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/fixed_heads"))
    args = parser.parse_args(argv)

    from tmrl_vla.assets import default_policy_and_adapter
    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.envs.spec import EnvSpec

    policy, adapter = args.policy, args.adapter
    if policy is None:
        policy, adapter = default_policy_and_adapter(args.cache_dir)
    make_env = EnvSpec(shift=args.shift, episode_length=args.episode_length).factory()
    envs = BatchedEnv(make_env, args.episodes)  # built once: every setting resets them to the same states
    recheck_envs = BatchedEnv(make_env, args.recheck)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"settings": args.settings, "episodes_per_setting": args.episodes, "shift": args.shift}
    for kind in args.agents.split(","):
        summary[kind] = sweep(kind, policy, adapter, envs, recheck_envs, args)
    envs.close()
    recheck_envs.close()
    plot(summary, args.out / "fixed_heads.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    final = {a: {k: v for k, v in s.items() if k != "rows"} for a, s in summary.items() if isinstance(s, dict)}
    print(f"plot: {args.out / 'fixed_heads.png'}  summary: {args.out / 'summary.json'}")
    print(json.dumps(final))
    return summary


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    colours = {"tmrl": "#dd8452", "dsrl": "#4c72b0"}
    bins = [i / 16 for i in range(17)]
    for agent, s in summary.items():
        if isinstance(s, dict):
            ax.hist([r["success"] for r in s["rows"]], bins=bins, alpha=0.6, color=colours.get(agent), label=agent)
    ax.set_xlabel("success rate of one fixed (z, sigma) held for whole episodes")
    ax.set_ylabel("settings")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
