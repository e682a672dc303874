"""gym-hil pick-cube throughput: env steps/s with stock rendering and with the fast-rendering fix.

    python eval/bench_gym_hil.py [--steps 50] [--stock-steps N] [--image-size 128]

Prints one JSON object as its last line. The arm holds still (zero displacement, gripper kept), so
what is timed is physics plus rendering both cameras. Stock rendering runs at about one step per
second in software GL, so it is timed over a tenth of ``--steps`` (at least 3) unless
``--stock-steps`` says otherwise. Each setting gets one untimed warm-up step (the first frame
compiles shaders).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco; registers gym_hil_pick_cube)
from tmrl_vla.envs.gym_hil import make_gym_hil_pick_cube

HOLD = np.array([0.0, 0.0, 0.0, 1.0], np.float32)  # no end-effector motion, gripper command "keep"


def steps_per_s(fast_render: bool, steps: int, image_size: int) -> float:
    env = make_gym_hil_pick_cube(image_size=image_size, fast_render=fast_render)
    try:
        env.reset(seed=0)
        env.step(HOLD)
        start = time.perf_counter()
        for _ in range(steps):
            env.step(HOLD)
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="timed steps with fast rendering")
    parser.add_argument("--stock-steps", type=int, default=None, help="timed steps with stock rendering")
    parser.add_argument("--image-size", type=int, default=128)
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.stock_steps is not None and args.stock_steps < 1):
        parser.error("--steps and --stock-steps must be at least 1")
    stock_steps = args.stock_steps if args.stock_steps is not None else max(3, args.steps // 10)

    stock = steps_per_s(False, stock_steps, args.image_size)
    fast = steps_per_s(True, args.steps, args.image_size)
    result = {
        "image_size": args.image_size,
        "steps_stock_render": stock_steps,
        "steps_fast_render": args.steps,
        "steps_per_s_stock_render": round(stock, 2),
        "steps_per_s_fast_render": round(fast, 2),
        "fast_render_speedup": round(fast / stock, 2),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
