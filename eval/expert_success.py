"""Scripted-expert success rate on the demo task and on every named context shift.

    python eval/expert_success.py [--episodes 50]

Prints one line per shift and, last, one JSON object {shift: {"success_rate", "ci95", "episodes"}}.
"""

from __future__ import annotations

import argparse
import json

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.envs.expert import expert_success
from tmrl_vla.envs.pick_cube import SHIFTS, PickCubeConfig
from tmrl_vla.rollout import wilson_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50)
    args = parser.parse_args()
    result = {}
    for shift in SHIFTS:
        wins = expert_success(PickCubeConfig.with_shift(shift), args.episodes)
        lo, hi = wilson_interval(sum(wins), len(wins))
        result[shift] = {
            "success_rate": sum(wins) / len(wins),
            "ci95": [round(lo, 3), round(hi, 3)],
            "episodes": len(wins),
        }
        print(f"{shift:<14} {result[shift]['success_rate']:.2f} (95% CI {lo:.2f}-{hi:.2f})", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
