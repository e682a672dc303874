"""What sigma does over an episode: the trained TMRL agent's sigma per decision next to the gripper.

    python eval/sigma_trace.py                    # the recipe's agent: outputs/finetune_pick/tmrl/pretrained_model
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

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def trace(args) -> list[dict]:
    """Load the agent and the frozen policy it steers, and record ``args.episodes`` episodes."""
    from tmrl_vla.envs.batched import BatchedEnv
    from tmrl_vla.envs.spec import EnvSpec
    from tmrl_vla.rl.analysis import trace_sigma
    from tmrl_vla.rl.evaluation import Steering, make_collector
    from tmrl_vla.rl.pretrained import TMRLAgent
    from tmrl_vla.rl.run import load_frozen_policy

    agent = TMRLAgent.from_pretrained(args.agent)
    # DSRL agents carry no adapter: their policy is the plain BC one (sigma stays 0)
    csp, pre, post = load_frozen_policy(agent.base_policy, agent.csp_adapter)
    agent.check_base(csp, source=args.agent)
    envs = BatchedEnv(EnvSpec(shift=args.shift, episode_length=args.episode_length).factory(), args.episodes)
    steering = Steering(csp, agent.actor, pre, post, agent.config, agent.observation, agent.observation_encoder())
    # --stochastic samples the heads as in training (noise per decision, or held per episode)
    collector = make_collector(envs, steering, seed=args.seed, exploration=agent.sac.exploration)
    records = trace_sigma(collector, args.episodes, deterministic=not args.stochastic)
    envs.close()
    return records


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
    parser.add_argument("--agent", default="outputs/finetune_pick/tmrl/pretrained_model")
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
    from tmrl_vla.rl.analysis import summarise_sigma

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = trace(args)
    plot(records, out / "sigma_trace.png", GRIPPER_OPEN, GRIPPER_CLOSED)
    summary = summarise_sigma(records, GRIPPER_OPEN, GRIPPER_CLOSED)
    (out / "sigma_trace.json").write_text(json.dumps({**summary, "records": records}, indent=2))
    print(f"plot: {out / 'sigma_trace.png'}  records: {out / 'sigma_trace.json'}")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
