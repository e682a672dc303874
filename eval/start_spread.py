"""How much of the base policy's success does the agent's start keep? Success against ``init_std``.

    python eval/start_spread.py --shift none                       # a base that already succeeds
    python eval/start_spread.py --shift moved_camera               # the default task (base near 0.08)
    python eval/start_spread.py --stds 0.1,1.0 --explorations episode --agents tmrl --episodes 32

Before it learns anything, an agent plays its start: z = tanh(N(0, init_std^2)) per dimension,
repeated over the chunk, and for TMRL sigma around ``--sigma`` (its y head drawn with the same
spread), on the frozen CSP policy (TMRL) or the plain BC policy (DSRL). With
``--rl.sac.exploration=episode`` one draw is held for a whole episode, with ``decision`` a fresh
one per decision. Each start here is played exactly as ``--rl.sac.warmup_heads=prior`` plays it,
on the same initial states, next to the BC policy with its own i.i.d. noise (the base a user brings).

Why it matters: every episode a robot user pays for starts from there. A wide start explores,
which a base that never succeeds needs; a base that already half-solves the task loses most of
that in its first episodes, and the agent must then learn its way back. Writes a JSON summary and a
plot of success against ``init_std`` (Wilson 95% intervals), and prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def measure(args: argparse.Namespace, policy: str, adapter: str | None) -> dict:
    """Every (agent, exploration, init_std) start's successes, and the base's, over ``args.episodes``."""
    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.envs.spec import EnvSpec
    from tmrl_vla.rl.analysis import score_start, start_actor
    from tmrl_vla.rl.evaluation import episode_shares
    from tmrl_vla.rl.run import load_frozen_policy
    from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate

    make_env = EnvSpec(shift=args.shift, episode_length=args.episode_length).factory()
    num_envs = min(args.num_envs, args.episodes)
    per_env = episode_shares(args.episodes, num_envs)  # per_env seeding: seeds seed .. seed + episodes - 1
    bc = load_frozen_policy(policy, None)
    action_dim = bc[0].base_policy.config.output_features["action"].shape[0]
    base = evaluate(
        LeRobotChunkPolicy(*bc, sigma=0.0),
        make_env,
        num_episodes=args.episodes,
        num_envs=num_envs,
        seed=args.seed,
        n_exec=args.n_exec,
    )
    result: dict = {"base": int(sum(base.successes))}
    envs = BatchedEnv(make_env, num_envs)
    try:
        for kind in args.agents:
            frozen = load_frozen_policy(policy, adapter) if kind == "tmrl" else bc
            result[kind] = {}
            for exploration in args.explorations:
                result[kind][exploration] = {}
                for std in args.stds:
                    actor = start_actor(kind, action_dim, init_std=std, init_sigma=args.sigma)
                    wins = score_start(
                        *frozen, envs, actor, per_env, seed=args.seed, n_exec=args.n_exec, exploration=exploration
                    )
                    result[kind][exploration][str(std)] = wins
                    print(f"[{kind}] {exploration} init_std {std}: {wins}/{args.episodes}", flush=True)
    finally:
        envs.close()
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", default="none")
    parser.add_argument("--stds", default="0.1,0.22,0.5,1.0", help="the init_std values to play")
    parser.add_argument("--sigma", type=float, default=0.05, help="TMRL's init_sigma")
    parser.add_argument("--agents", default="tmrl,dsrl")
    parser.add_argument("--explorations", default="episode,decision")
    parser.add_argument("--episodes", type=int, default=64, help="episodes per start (the same initial states)")
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--episode-length", type=int, default=None, help="override the env's (tests)")
    parser.add_argument("--n-exec", type=int, default=5)
    parser.add_argument("--seed", type=int, default=10_000, help="the first episode's seed")
    parser.add_argument("--policy", default=None, help="LeRobot checkpoint (default: the embedded BC policy)")
    parser.add_argument("--adapter", default=None, help="its CSP adapter (default: the embedded one)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", type=Path, default=Path("outputs/start_spread"))
    args = parser.parse_args(argv)
    args.stds = [float(s) for s in args.stds.split(",")]
    args.agents = args.agents.split(",")
    args.explorations = args.explorations.split(",")
    unknown = (set(args.agents) - {"tmrl", "dsrl"}) | (set(args.explorations) - {"episode", "decision"})
    if unknown:
        known = "agents: tmrl, dsrl; explorations: episode, decision"
        parser.error(f"unknown agents or explorations: {sorted(unknown)} ({known})")
    if "tmrl" in args.agents and args.adapter is None and args.policy is not None:
        parser.error("TMRL plays the CSP adapter: pass --adapter with --policy (or --agents dsrl)")

    from tmrl_vla.assets import default_policy_and_adapter

    policy, adapter = args.policy, args.adapter
    if policy is None:
        policy, adapter = default_policy_and_adapter(args.cache_dir)
    counts = measure(args, policy, adapter)
    summary = {
        "shift": args.shift,
        "episodes": args.episodes,
        "init_sigma": args.sigma,
        "successes": counts,
        "success_rate": rates(counts, args.episodes),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    plot(summary, args.out / "start_spread.png")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"plot: {args.out / 'start_spread.png'}  summary: {args.out / 'summary.json'}")
    print(json.dumps(summary["success_rate"]))
    return summary


def rates(counts: dict, episodes: int) -> dict:
    """The same nesting as ``counts``, successes divided by ``episodes``."""
    if isinstance(counts, dict):
        return {k: rates(v, episodes) for k, v in counts.items()}
    return counts / episodes


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tmrl_vla.rollout import wilson_interval

    n = summary["episodes"]
    counts = summary["successes"]
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    lo, hi = wilson_interval(counts["base"], n)
    ax.axhspan(lo, hi, color="0.85", label=f"base policy, its own noise ({counts['base']}/{n})")
    colours = {"tmrl": "#dd8452", "dsrl": "#4c72b0"}
    for kind, by_exploration in counts.items():
        if kind == "base":
            continue
        for exploration, by_std in by_exploration.items():
            stds = [float(s) for s in by_std]
            wins = list(by_std.values())
            bounds = [wilson_interval(w, n) for w in wins]
            ax.errorbar(
                stds,
                [w / n for w in wins],
                yerr=[
                    [w / n - b[0] for w, b in zip(wins, bounds, strict=True)],
                    [b[1] - w / n for w, b in zip(wins, bounds, strict=True)],
                ],
                color=colours[kind],
                linestyle="-" if exploration == "episode" else "--",
                marker="o",
                capsize=3,
                label=f"{kind}, noise held per {exploration}",
            )
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("init_std (spread of z before the tanh)")
    ax.set_ylabel("success of the start")
    ax.set_title(f"the agent's start on '{summary['shift']}', sigma {summary['init_sigma']} (TMRL)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
