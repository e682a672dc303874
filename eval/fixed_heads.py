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


class FixedHeads:
    """A stand-in high-level policy that answers every observation with the same head values."""

    def __init__(self, actions: dict[str, torch.Tensor]) -> None:
        self.actions = actions

    def sample(self, features, *, deterministic=False, generator=None, noise=None):
        b = features.shape[0]
        return {h: v.expand(b, -1).clone() for h, v in self.actions.items()}, {}


def score(csp, pre, post, envs, actions: dict, *, seed: int, n_exec: int) -> tuple[int, int]:
    """(successes, episodes) of the fixed setting over one episode per env of ``envs``, started from
    seeds seed, seed+1, ... (the same initial states for every setting scored on the same envs)."""
    from tmrl_vla.rl.collector import DecisionCollector, play_episodes

    heads = FixedHeads(actions)
    collector = DecisionCollector(envs, csp, heads, pre, post, n_exec=n_exec, seed=seed, seeding="per_env")
    episodes = envs.num_envs
    return play_episodes(collector, torch.ones(episodes, dtype=torch.long)), episodes  # each env's first episode


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

    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.policies import load_lerobot_policy

    policy_dir, adapter_dir = args.policy, args.adapter
    if policy_dir is None:
        from tmrl_vla.assets import AssetsConfig, build_default_assets
        from tmrl_vla.cache import AssetCache

        assets = build_default_assets(AssetsConfig(), AssetCache(args.cache_dir))
        policy_dir, adapter_dir = str(assets.policy_dir), str(assets.csp_dir)
    extra = {"episode_length": args.episode_length} if args.episode_length else {}

    def make_env():
        return PickCubeEnv(PickCubeConfig.with_shift(args.shift, **extra))

    from tmrl_vla.envs.batched import BatchedEnv

    envs = BatchedEnv(make_env, args.episodes)  # built once: every setting resets them to the same states
    recheck_envs = BatchedEnv(make_env, args.recheck)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"settings": args.settings, "episodes_per_setting": args.episodes, "shift": args.shift}
    for agent in args.agents.split(","):
        policy, pre, post = load_lerobot_policy(policy_dir)
        if agent == "tmrl":
            csp = CSPPolicy.from_pretrained(adapter_dir, base=policy).merge_adapter()
        else:
            csp = CSPPolicy.from_base(policy)
        csp.eval()
        action_dim = policy.config.output_features["action"].shape[0]
        g = torch.Generator().manual_seed(args.seed)
        rows = []
        for k in range(args.settings):
            z = torch.zeros(1, action_dim) if k == 0 else torch.rand(1, action_dim, generator=g) * 2 - 1
            actions = {"z": z}
            if agent == "tmrl":
                actions["y"] = torch.rand(1, 1, generator=g) * 2 - 1
            wins, n = score(csp, pre, post, envs, actions, seed=10_000, n_exec=args.n_exec)
            sigma = (float(actions["y"]) + 1) / 2 if "y" in actions else 0.0
            rows.append({"z": z[0].tolist(), "sigma": sigma, "success": wins / n})
            print(f"[{agent}] setting {k}: sigma {sigma:.2f}, success {wins}/{n}", flush=True)
        best = sorted(range(len(rows)), key=lambda i: -rows[i]["success"])[:3]
        for i in best:
            actions = {"z": torch.tensor([rows[i]["z"]])}
            if agent == "tmrl":
                actions["y"] = torch.tensor([[2 * rows[i]["sigma"] - 1]])
            wins, n = score(csp, pre, post, recheck_envs, actions, seed=20_000, n_exec=args.n_exec)
            rows[i]["recheck_success"] = wins / n
        rates = [r["success"] for r in rows]
        summary[agent] = {
            "mean_success": sum(rates) / len(rates),
            "best_success": max(rates),
            "best_recheck_success": max(rows[i]["recheck_success"] for i in best),
            "fraction_at_least_0.5": sum(r >= 0.5 for r in rates) / len(rates),
            "rows": rows,
        }
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
