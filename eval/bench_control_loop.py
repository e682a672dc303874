"""Control-loop timing with a real VLA: jitter and late ticks at 30 Hz, inference beside the arm.

    python eval/bench_control_loop.py [--fps 30 --ticks 300 --threads 1] [--out FILE]

The "robot" is the simulated pick scene (each command is one control step of the MuJoCo arm and a
camera render), the policy the embedded default's tiny SmolVLA (its BC base), run through
:class:`tmrl_vla.robots.control.ControlLoop` behind a safety layer at the arm's joint limits and
0.1 rad per tick. Prints and writes one JSON summary (tick start delays, the fraction of late
ticks, ticks without an action, inference time).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.envs.pick_cube import JOINT_NAMES, PickCubeConfig, PickCubeEnv
from tmrl_vla.robots.control import ControlConfig, ControlLoop
from tmrl_vla.robots.safety import SafetyConfig, SafetyLayer
from tmrl_vla.rollout import LeRobotChunkPolicy


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refill-at", type=int, default=3)
    parser.add_argument("--base", default=None, help="LeRobot checkpoint (default: the embedded default's BC policy)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from tmrl_vla.policies import load_lerobot_policy

    if args.base is None:
        from tmrl_vla.assets import default_policy_and_adapter

        args.base = default_policy_and_adapter()[0]
    policy = LeRobotChunkPolicy(*load_lerobot_policy(args.base))
    env = PickCubeEnv(PickCubeConfig.with_shift("moved_camera", episode_length=10**6))
    obs, _ = env.reset(seed=0)
    state = {"obs": obs}
    safety = SafetyLayer(
        SafetyConfig(
            joint_names=tuple(f"{j}.pos" for j in JOINT_NAMES),
            lower=tuple(env.joint_low.tolist()),
            upper=tuple(env.joint_high.tolist()),
            max_step=(0.1,) * len(JOINT_NAMES),  # rad (m for the gripper) per tick
        )
    )

    def read():
        o = state["obs"]
        return o, o["observation.state"].astype(float), time.monotonic()

    def send(command):
        state["obs"] = env.step(command.astype(np.float32))[0]

    def infer(o):
        batch = {k: v[None] for k, v in o.items()}
        return policy(batch, env.task)[0][: policy.n_action_steps + args.refill_at]

    infer(state["obs"])  # warm up: first calls allocate
    stats = ControlLoop(read, send, infer, safety, ControlConfig(fps=args.fps, refill_at=args.refill_at)).run(
        args.ticks
    )
    env.close()
    summary = stats.summary(ControlConfig().late_after_s) | {
        "fps": args.fps,
        "threads": args.threads,
        "safety_counts": dict(safety.counts),
    }
    print(json.dumps(summary))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
