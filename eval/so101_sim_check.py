"""Does a policy succeed as often through the simulated SO-101's hardware chain as in the scene itself?

    python eval/so101_sim_check.py --shift none --shift moved_camera --episodes 50 --out eval/results/so101_sim
    python eval/so101_sim_check.py --policy outputs/finetune_so101/tmrl/pretrained_model --shift moved_camera

For each shift, the same policy runs (a) in the pick scene's gym env directly and (b) on
``recipes/finetune_so101.py --simulated=true``'s robot: LeRobot's unmodified ``so101_follower``
driver over the emulated Feetech bus, ``mujoco_sim`` cameras, the safety layer, real-time ticks at
25 Hz, unit conversion from LeRobot's degrees, and the simulated person's labels. Everything in (b)
that (a) lacks - servo quantisation, the speed limit, the arm waiting while the policy decides, a
camera frame up to a tick old - could cost success; the two rates agreeing (Wilson intervals) says
it does not. Episode seeds differ between the two (each draws its own cube positions). Also
reported per robot episode: wall time, ticks that started late, and the safety layer's
interventions. Without ``--policy``, the embedded default's BC policy.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)


def chunk_runner(policy: str):
    """(run(make_env, episodes, num_envs) -> successes, policy config) for a LeRobot policy or a tmrl agent."""
    kind = json.loads((Path(policy) / "config.json").read_text())["type"]
    if kind == "tmrl":
        from tmrl_vla.rl.evaluation import agent_steering, evaluate

        steering, agent = agent_steering(policy)

        def run(make_env, episodes, num_envs):
            return round(evaluate(make_env, steering, episodes=episodes, num_envs=num_envs) * episodes)

        return run, agent.csp.base_policy.config
    from tmrl_vla.policies import load_lerobot_policy
    from tmrl_vla.rollout import LeRobotChunkPolicy, evaluate

    chunk_policy = LeRobotChunkPolicy(*load_lerobot_policy(policy))

    def run(make_env, episodes, num_envs):
        result = evaluate(
            chunk_policy, make_env, num_episodes=episodes, num_envs=num_envs, n_exec=chunk_policy.n_action_steps
        )
        return int(sum(result.successes))

    return run, chunk_policy.lerobot_config


def robot_eval(
    run,
    policy_config,
    shift: str,
    episodes: int,
    embedded: bool,
    camera_fps: int | None = None,
    bridge: bool = True,
    person_seed: int = 50_000,
) -> dict:
    from lerobot.robots import make_robot_from_config

    from tmrl_vla.robot_finetune import RobotFinetuneConfig, simulated_setup
    from tmrl_vla.robots.env import RobotEnv
    from tmrl_vla.robots.people import SimulatedPerson
    from tmrl_vla.robots.safety import safety_preset
    from tmrl_vla.robots.sim.so101 import SimulatedSO101, SimulatedSO101Config

    cfg = RobotFinetuneConfig(
        simulated=True, person="simulated", simulation=SimulatedSO101Config(shift=shift, camera_fps=camera_fps)
    )
    simulation = SimulatedSO101(cfg.simulation)
    envs: list = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            robot_config, env_config = simulated_setup(cfg, simulation, Path(tmp), embedded=embedded)
            env_config = dataclasses.replace(env_config, bridge=bridge)

            def make_env():
                env = RobotEnv(
                    make_robot_from_config(robot_config),
                    policy_config,
                    safety_preset(robot_config.type),
                    SimulatedPerson(simulation, seed=person_seed),
                    env_config,
                )
                envs.append(env)
                return env

            start = time.perf_counter()
            successes = run(make_env, episodes, 1)
            seconds = time.perf_counter() - start
        log = envs[0].episode_log
        safety = sum((Counter(r.safety) for r in log), Counter())
        return {
            "successes": successes,
            "episodes": episodes,
            "seconds": seconds,
            "episode_wall_s_mean": sum(r.wall_s for r in log) / len(log),
            "late_ticks_per_episode": sum(r.late_ticks for r in log) / len(log),
            "bridged_ticks_per_episode": sum(r.bridged_ticks for r in log) / len(log),
            "ticks_per_episode": sum(r.ticks for r in log) / len(log),
            "safety_interventions": dict(safety),
            "torque_enabled_after": [simulation.bus.torque_enabled(i) for i in simulation.bus.motor_ids],
            "physics_lagging_updates": simulation.lagging_updates,
        }
    finally:
        simulation.stop()


def scene_eval(run, shift: str, episodes: int) -> dict:
    from tmrl_vla.envs.pick_cube import make_so100_pick_cube

    start = time.perf_counter()
    successes = run(lambda: make_so100_pick_cube(shift=shift), episodes, 8)
    return {"successes": successes, "episodes": episodes, "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default=None, help="a LeRobot policy or tmrl agent (default: the embedded BC)")
    parser.add_argument("--shift", action="append", default=None, help="repeatable (default: none, moved_camera)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--out", default="outputs/so101_sim_check")
    parser.add_argument(
        "--camera-fps", type=int, default=None, help="the cameras' frame rate (default: 25, the ticks')"
    )
    parser.add_argument("--robot-only", action="store_true", help="skip the scene's own evaluation")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="the arm holds while the policy decides (--env.bridge=false) instead of running on the chunk's rest",
    )
    parser.add_argument(
        "--person-seed",
        type=int,
        default=50_000,
        help="the simulated person's seed, which sets the robot episodes' cube positions (a training run's "
        "first episodes use its --rl.seed x 100000)",
    )
    args = parser.parse_args(argv)
    import torch

    from tmrl_vla.rollout import wilson_interval

    torch.set_num_threads(1)
    embedded = args.policy is None
    if embedded:
        from tmrl_vla.assets import AssetsConfig, build_default_assets
        from tmrl_vla.cache import AssetCache

        args.policy = str(build_default_assets(AssetsConfig(), AssetCache()).policy_dir)
    run, policy_config = chunk_runner(args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"policy": "embedded BC" if embedded else args.policy, "person_seed": args.person_seed, "shifts": {}}
    for shift in args.shift or ["none", "moved_camera"]:
        row = {} if args.robot_only else {"scene": scene_eval(run, shift, args.episodes)}
        row["so101_sim"] = robot_eval(
            run, policy_config, shift, args.episodes, embedded, args.camera_fps, not args.hold, args.person_seed
        )
        for side in row:
            r = row[side]
            r["rate"] = r["successes"] / r["episodes"]
            r["wilson95"] = wilson_interval(r["successes"], r["episodes"])
        report["shifts"][shift] = row
        print(json.dumps({shift: row}), flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
