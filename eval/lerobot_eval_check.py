"""LeRobot's own ``lerobot-eval`` against the project's evaluation, for the same policies.

    python eval/lerobot_eval_check.py --policy BASE_DIR --policy AGENT_DIR --episodes 50 --out eval/results/lerobot_eval

For every policy (a plain LeRobot policy or a ``tmrl`` agent directory) on the pick task with a
context shift: ``lerobot-eval --env.type=so100_pick_cube`` in a subprocess (the CLI as a user runs
it, with the plugins installed) and the project's own evaluation in this process (the base policy
through :func:`tmrl_vla.rollout.evaluate`, an agent through :func:`tmrl_vla.rl.evaluation.evaluate`,
which is what training reports). The two draw different initial states (LeRobot seeds episodes from
``--seed``, the project from its own evaluation seeds), so they agree when their Wilson intervals
do; the report gives both and the difference with its interval.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import torch


def lerobot_eval(policy: str, name: str, args, out: Path, extra: list[str]) -> dict:
    """Run the ``lerobot-eval`` console script next to this interpreter; returns its overall metrics."""
    command = [
        str(Path(sys.executable).parent / "lerobot-eval"),
        f"--policy.path={policy}",
        "--policy.device=cpu",
        "--env.type=so100_pick_cube",
        f"--env.shift={args.shift}",
        f"--eval.n_episodes={args.episodes}",
        f"--eval.batch_size={args.batch_size}",
        f"--seed={args.lerobot_seed}",
        f"--output_dir={out}",
        *extra,
    ]
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"lerobot-eval failed ({result.returncode}):\n{result.stderr[-3000:]}")
    overall = json.loads((out / "eval_info.json").read_text())["overall"]
    successes = round(overall["pc_success"] * overall["n_episodes"] / 100)
    # as a reader would type it: the policy by its label, the output directory left to them
    shown = " ".join(["lerobot-eval", *command[1:]])
    shown = shown.replace(f"--policy.path={policy}", f"--policy.path=<{name}>").replace(str(out), "<out>")
    return {
        "command": shown,
        "successes": successes,
        "episodes": overall["n_episodes"],
        "seconds": time.perf_counter() - start,
    }


def own_eval(policy: str, args) -> dict:
    """The project's evaluation of ``policy`` on the same task."""
    from tmrl_vla.envs.pick_cube import make_so100_pick_cube
    from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate

    make_env = lambda: make_so100_pick_cube(shift=args.shift)  # noqa: E731
    start = time.perf_counter()
    kind = json.loads((Path(policy) / "config.json").read_text())["type"]
    if kind == "tmrl":
        from tmrl_vla.rl.evaluation import agent_steering
        from tmrl_vla.rl.evaluation import evaluate as evaluate_agent

        steering, _ = agent_steering(policy)
        rate = evaluate_agent(make_env, steering, episodes=args.episodes, num_envs=args.batch_size)
        successes = round(rate * args.episodes)
    else:
        from tmrl_vla.policies import load_lerobot_policy

        chunk_policy = LeRobotChunkPolicy(*load_lerobot_policy(policy))
        result = evaluate(
            chunk_policy,
            make_env,
            num_episodes=args.episodes,
            num_envs=args.batch_size,
            seed=args.own_seed,
            n_exec=chunk_policy.n_action_steps,
        )
        successes = int(sum(result.successes))
    return {"successes": successes, "episodes": args.episodes, "seconds": time.perf_counter() - start}


def difference_ci(a: dict, b: dict) -> tuple[float, float, float]:
    """Difference of two success rates with a normal-approximation 95% interval."""
    p, q = a["successes"] / a["episodes"], b["successes"] / b["episodes"]
    se = math.sqrt(p * (1 - p) / a["episodes"] + q * (1 - q) / b["episodes"])
    return p - q, p - q - 1.96 * se, p - q + 1.96 * se


def main(argv=None) -> dict:
    from tmrl_vla.rollout import wilson_interval

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", action="append", required=True, help="a policy or agent directory (repeatable)")
    parser.add_argument("--name", action="append", help="a label per --policy (default: the directory name)")
    parser.add_argument("--shift", default="moved_camera")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--batch_size", type=int, default=10)
    parser.add_argument("--lerobot_seed", type=int, default=1000, help="lerobot-eval's --seed (its default)")
    parser.add_argument("--own_seed", type=int, default=100_000, help="the base policy evaluation's first env seed")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extra", action="append", default=[], help="another lerobot-eval flag (repeatable)")
    parser.add_argument("--out", default="outputs/lerobot_eval_check")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.name or [Path(p).name for p in args.policy]
    report = {"shift": args.shift, "episodes": args.episodes, "policies": {}}
    for name, policy in zip(names, args.policy, strict=True):
        theirs = lerobot_eval(policy, name, args, out / f"lerobot_eval_{name}", args.extra)
        ours = own_eval(policy, args)
        row = {"lerobot_eval": theirs, "project": ours, "difference_ci95": difference_ci(theirs, ours)}
        for side in (theirs, ours):
            side["success_rate"] = side["successes"] / side["episodes"]
            side["ci95"] = wilson_interval(side["successes"], side["episodes"])
        report["policies"][name] = row
        print(
            f"{name}: lerobot-eval {theirs['success_rate']:.2f} ({theirs['ci95'][0]:.2f}-{theirs['ci95'][1]:.2f}), "
            f"project {ours['success_rate']:.2f} ({ours['ci95'][0]:.2f}-{ours['ci95'][1]:.2f}), "
            "difference {:+.2f} ({:+.2f} to {:+.2f})".format(*row["difference_ci95"])
        )
    (out / "lerobot_eval_check.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
