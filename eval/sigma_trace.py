"""What sigma does over an episode: the trained TMRL agent's sigma per decision next to the gripper.

    python eval/sigma_trace.py                    # the recipe's agent: outputs/finetune_pick/tmrl/high_level_policy
    python eval/sigma_trace.py --agent DIR --episodes 8 --shift moved_camera

The TMRL paper saw sigma low while grasping (precision: read the context) and high while reaching
(exploration). This runs the agent deterministically (or, with ``--stochastic``, sampling its heads
the way it was trained: per decision, or held per episode) on fresh episodes, records sigma and the
gripper joint at every decision, plots one panel per episode (sigma, and the gripper opening on a
second axis, a marker where the episode succeeded) and summarises mean sigma with the gripper open
vs closed. Prints the summary as its last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def trace(
    agent_dir: str, *, episodes: int, shift: str, seed: int, deterministic: bool, episode_length: int | None = None
) -> list[dict]:
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rl.collector import DecisionCollector
    from tmrl_vla.rl.pretrained import TMRLAgent

    agent = TMRLAgent.from_pretrained(agent_dir)
    policy, pre, post = load_lerobot_policy(agent.base_policy)
    # DSRL agents carry no adapter: their policy is the plain BC one (sigma stays 0)
    adapter = agent.csp_adapter
    csp = CSPPolicy.from_pretrained(adapter, base=policy) if adapter else CSPPolicy.from_base(policy)
    agent.check_base(csp, source=agent_dir)
    extra = {"episode_length": episode_length} if episode_length else {}
    envs = BatchedEnv(lambda: PickCubeEnv(PickCubeConfig.with_shift(shift, **extra)), episodes)
    collector = DecisionCollector(
        envs,
        csp,
        agent.actor,
        pre,
        post,
        n_exec=agent.config.n_exec,
        z_scale=agent.config.z_scale,
        seed=seed,
        image_grid=agent.config.image_grid,
        exploration=agent.config.exploration,  # how --stochastic samples: as in training
        encoder=agent.observation_encoder(),
    )
    collector.reset()
    records = [{"sigma": [], "gripper": [], "success": False, "length": None} for _ in range(episodes)]
    running = np.ones(episodes, dtype=bool)
    with torch.no_grad():
        while running.any():
            gripper = collector.observation["observation.state"][:, -1].copy()
            t = collector.step(deterministic=deterministic)
            for i in np.flatnonzero(running):
                records[i]["sigma"].append(float(t.sigma[i]))
                records[i]["gripper"].append(float(gripper[i]))
                if t.episode_end[i]:
                    records[i]["success"] = bool(t.success[i])
                    records[i]["length"] = len(records[i]["sigma"])
                    running[i] = False
    envs.close()
    return records


def phases(record: dict, middle: float, opens_high: bool) -> dict[str, list[float]] | None:
    """One episode's sigma split around the grasp: ``reach`` (decisions before it), ``grasp`` (the
    decision whose chunk closed the gripper: the one before the first reading past ``middle``) and
    ``after``. None if the gripper never closed."""
    gripper = np.asarray(record["gripper"])
    closed = np.flatnonzero(gripper < middle if opens_high else gripper > middle)
    if closed.size == 0 or closed[0] == 0:
        return None
    t, sigma = int(closed[0]), list(record["sigma"])
    return {"reach": sigma[: t - 1], "grasp": [sigma[t - 1]], "after": sigma[t:]}


def summarise(records: list[dict], open_value: float, closed_value: float) -> dict:
    """Mean sigma over decisions with the gripper nearer open vs nearer closed, and, over the
    successful episodes, before / at / after the decision that closed the gripper."""
    middle = (open_value + closed_value) / 2
    opens_high = open_value > closed_value
    sigma = np.concatenate([r["sigma"] for r in records])
    gripper = np.concatenate([r["gripper"] for r in records])
    is_open = gripper > middle if opens_high else gripper < middle
    mean = lambda x: float(np.mean(x)) if len(x) else None  # noqa: E731
    split = [phases(r, middle, opens_high) for r in records if r["success"]]
    split = [p for p in split if p is not None]
    return {
        "episodes": len(records),
        "successes": sum(r["success"] for r in records),
        "decisions": int(sigma.size),
        "sigma_mean": mean(sigma),
        "sigma_mean_gripper_open": mean(sigma[is_open]),
        "sigma_mean_gripper_closed": mean(sigma[~is_open]),
        "decisions_gripper_closed": int((~is_open).sum()),
        **{f"successes_sigma_{k}": mean([v for p in split for v in p[k]]) for k in ("reach", "grasp", "after")},
    }


def plot(records: list[dict], path: Path, open_value: float, closed_value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(records)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False, sharey=True)
    for ax, rec in zip(axes.flat, records, strict=False):
        xs = np.arange(len(rec["sigma"]))
        ax.plot(xs, rec["sigma"], color="#dd8452", label="sigma")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("decision")
        opening = (np.array(rec["gripper"]) - closed_value) / (open_value - closed_value)
        twin = ax.twinx()
        twin.plot(xs, opening, color="#4c72b0", lw=1, ls="--", label="gripper open")
        twin.set_ylim(-0.1, 1.1)
        twin.set_yticks([])
        ax.set_title("success" if rec["success"] else "failure", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("sigma (orange)\ngripper opening (blue, dashed)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="outputs/finetune_pick/tmrl/high_level_policy")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--shift", default="moved_camera")
    parser.add_argument("--seed", type=int, default=3_000_000_000)
    parser.add_argument(
        "--stochastic", action="store_true", help="sample the heads as in training instead of taking their means"
    )
    parser.add_argument("--episode-length", type=int, default=None, help="override the env's (tests)")
    parser.add_argument("--out", default="outputs/sigma_trace")
    args = parser.parse_args(argv)

    from tmrl_vla.envs.pick_cube import GRIPPER_CLOSED, GRIPPER_OPEN

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = trace(
        args.agent,
        episodes=args.episodes,
        shift=args.shift,
        seed=args.seed,
        deterministic=not args.stochastic,
        episode_length=args.episode_length,
    )
    plot(records, out / "sigma_trace.png", GRIPPER_OPEN, GRIPPER_CLOSED)
    summary = summarise(records, GRIPPER_OPEN, GRIPPER_CLOSED)
    (out / "sigma_trace.json").write_text(json.dumps({**summary, "records": records}, indent=2))
    print(f"plot: {out / 'sigma_trace.png'}  records: {out / 'sigma_trace.json'}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
