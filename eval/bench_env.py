"""Env throughput on this machine: steps/s with rendering, single and batched, and reset time.

    python eval/bench_env.py [--steps 600] [--num-envs 8]

Prints one JSON object as its last line. Actions are the home pose plus small noise, so the arm
moves and the renderer redraws a changing scene; physics and rendering are both included.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.envs.batched import BatchedEnv
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv


def single(cameras: tuple[str, ...], steps: int) -> tuple[float, float]:
    env = PickCubeEnv(PickCubeConfig(cameras=cameras))
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start, resets, reset_time = time.perf_counter(), 0, 0.0
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(env.home_qpos + rng.normal(0, 0.02, 6))
        if term or trunc:
            t0 = time.perf_counter()
            env.reset()
            reset_time += time.perf_counter() - t0
            resets += 1
    rate = steps / (time.perf_counter() - start)
    t0 = time.perf_counter()
    for i in range(20):
        env.reset(seed=i)
    env.close()
    return rate, (time.perf_counter() - t0) / 20 * 1000


def batched(num_envs: int, steps: int) -> float:
    envs = BatchedEnv(PickCubeEnv, num_envs)
    rng = np.random.default_rng(0)
    envs.reset(list(range(num_envs)))
    home = envs.envs[0].home_qpos
    start = time.perf_counter()
    n = 0
    while n < steps:
        if envs.done.all():
            envs.reset(list(range(num_envs)))
        active = int((~envs.done).sum())
        envs.step(home + rng.normal(0, 0.02, (num_envs, 6)))
        n += active
    rate = n / (time.perf_counter() - start)
    envs.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--num-envs", type=int, default=8)
    args = parser.parse_args()
    front, reset_ms = single(("front",), args.steps)
    both, _ = single(("front", "wrist"), args.steps)
    result = {
        "steps_per_s_front_64px": round(front, 1),
        "steps_per_s_front_wrist_64px": round(both, 1),
        f"steps_per_s_batched_{args.num_envs}_envs": round(batched(args.num_envs, args.steps), 1),
        "reset_ms": round(reset_ms, 2),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
