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


def csp_runner(policy: str, adapter: str | None, sigma: float, n_exec: int):
    """(run, policy config) for the CSP policy at a fixed ``sigma`` with z = 0: the frozen policy that
    a TMRL agent steers, played without an agent (the start an agent with ``init_sigma`` begins near).
    Without ``adapter``, the plain policy with z = 0 (sigma must be 0): DSRL's frozen policy, and the
    control for the adapter, since z = 0 is not the random noise the policy itself samples."""
    import torch

    from tmrl_vla.rl.analysis import FixedHeads
    from tmrl_vla.rl.config import AgentConfig, ObservationConfig
    from tmrl_vla.rl.evaluation import Steering, evaluate
    from tmrl_vla.rl.run import load_frozen_policy

    if not 0 <= sigma <= 1:
        raise ValueError(f"--csp-sigma must lie in [0, 1], got {sigma}")
    if adapter is None and sigma != 0:
        raise ValueError(f"without the adapter sigma is 0, got {sigma}")
    csp, pre, post = load_frozen_policy(policy, adapter)
    action_dim = csp.base_policy.config.output_features["action"].shape[0]
    actions = {"z": torch.zeros(1, action_dim)}
    if adapter is not None:
        actions["y"] = torch.full((1, 1), 2 * sigma - 1)  # FixedHeads' linear map: sigma = (y + 1) / 2
    heads = FixedHeads(actions)
    steering = Steering(csp, heads, pre, post, AgentConfig(n_exec=n_exec), ObservationConfig())

    def run(make_env, episodes, num_envs):
        return round(evaluate(make_env, steering, episodes=episodes, num_envs=num_envs) * episodes)

    return run, csp.base_policy.config


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
    parser.add_argument("--scene-only", action="store_true", help="skip the robot: only the scene's evaluation")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="the arm holds while the policy decides (--env.bridge=false) instead of running on the chunk's rest",
    )
    parser.add_argument(
        "--csp-sigma",
        type=float,
        default=None,
        help="play the embedded CSP adapter at this fixed sigma (z = 0) instead of a policy; 0 is the "
        "adapted policy without context noise, which need not be the BC policy it was trained from",
    )
    parser.add_argument(
        "--adapter",
        default=None,
        help="with --csp-sigma: another CSP adapter of the embedded base (default: the embedded adapter)",
    )
    parser.add_argument(
        "--base-z0",
        action="store_true",
        help="play the embedded BC policy with z = 0 (the control for --csp-sigma: the same initial noise)",
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
    fixed = args.csp_sigma is not None or args.base_z0
    if fixed and not embedded:
        parser.error("--csp-sigma and --base-z0 play the embedded default's policies; leave --policy out")
    if args.csp_sigma is not None and args.base_z0:
        parser.error("--csp-sigma or --base-z0, not both")
    if args.adapter is not None and args.csp_sigma is None:
        parser.error("--adapter goes with --csp-sigma")
    if args.robot_only and args.scene_only:
        parser.error("--robot-only or --scene-only, not both")
    if embedded:
        from tmrl_vla.assets import AssetsConfig, build_default_assets
        from tmrl_vla.cache import AssetCache

        assets = build_default_assets(AssetsConfig(), AssetCache())
        args.policy = str(assets.policy_dir)
    if fixed:
        from tmrl_vla.robot_finetune import robot_rl

        adapter = None if args.base_z0 else (args.adapter or str(assets.csp_dir))
        sigma = 0.0 if args.base_z0 else args.csp_sigma
        run, policy_config = csp_runner(args.policy, adapter, sigma, robot_rl().agent.n_exec)
    else:
        run, policy_config = chunk_runner(args.policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "embedded BC" if embedded else args.policy
    if args.csp_sigma is not None:
        name = f"{'embedded CSP' if args.adapter is None else args.adapter} at sigma {args.csp_sigma}, z = 0"
    elif args.base_z0:
        name = "embedded BC, z = 0"
    report = {"policy": name, "person_seed": args.person_seed, "shifts": {}}
    for shift in args.shift or ["none", "moved_camera"]:
        row = {} if args.robot_only else {"scene": scene_eval(run, shift, args.episodes)}
        if not args.scene_only:
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
