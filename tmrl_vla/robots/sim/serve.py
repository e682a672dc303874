"""Serve the simulated SO-101 to other processes, so that LeRobot's own command lines drive it.

    python -m tmrl_vla.robots.sim.serve --shift none          # prints the flags; Ctrl+C stops it

It starts :class:`~tmrl_vla.robots.sim.so101.SimulatedSO101` (the pick scene behind an emulated
Feetech bus on a pseudo-terminal), writes a calibration for LeRobot's ``so101_follower``, serves the
scene's cameras, resets and scripted expert on a port of 127.0.0.1
(:mod:`~tmrl_vla.robots.sim.scene_link`), and prints the flags that point LeRobot at it, e.g.::

    lerobot-record --robot.type=so101_follower --robot.port=/dev/pts/7 --robot.id=sim_so101 \\
        --robot.calibration_dir=outputs/so101_sim/calibration \\
        --robot.cameras="{front: {type: mujoco_sim, simulation: '127.0.0.1:40123', width: 64, height: 64}}" \\
        --teleop.type=scripted_expert_sim --teleop.simulation=127.0.0.1:40123 \\
        --dataset.repo_id=local/sim_demos --dataset.single_task="pick up the cube" ...

Nobody puts the cube back between LeRobot's episodes, so the scene does it: once the cube has been
held up for ``--reset-after-s``, it is put down somewhere new. The arm's units are LeRobot's
(degrees, gripper 0..100), as on a real SO-101.

The emulated servos answer from a process of their own (:mod:`~tmrl_vla.robots.sim.bus_process`),
so a reply does not wait for this process's physics and camera threads: LeRobot gives each reply
about 34 ms, and the reads of its connect (handshake, calibration) are not retried. The flags also
ask LeRobot to retry its other reads (``--robot.num_read_retries``), for a CPU loaded past that.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

import tmrl_vla.envs  # noqa: F401  (headless GL before mujoco)
from tmrl_vla.robots.sim.scene_link import SceneServer
from tmrl_vla.robots.sim.so101 import SimulatedSO101, SimulatedSO101Config


def lerobot_flags(
    port: str, robot_id: str, calibration_dir: Path, scene_port: int, config: SimulatedSO101Config
) -> str:
    size = config.image_size
    cameras = ", ".join(
        f"{c}: {{type: mujoco_sim, camera: {c}, simulation: '127.0.0.1:{scene_port}', width: {size}, height: {size}}}"
        for c in config.cameras
    )
    return (
        f"--robot.type=so101_follower --robot.port={port} --robot.id={robot_id} --robot.num_read_retries=10 "
        f'--robot.calibration_dir={calibration_dir} --robot.cameras="{{{cameras}}}" '
        f"--teleop.type=scripted_expert_sim --teleop.simulation=127.0.0.1:{scene_port}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", default="none", help="the pick scene's context shift (default: none)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--cameras", default="front", help="comma-separated scene cameras (front, wrist)")
    parser.add_argument("--port", type=int, default=0, help="the scene's port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--robot-id", default="sim_so101", help="the --robot.id the calibration is written for")
    parser.add_argument("--calibration-dir", default="outputs/so101_sim/calibration")
    parser.add_argument("--seed", type=int, default=0, help="the cube's first place; each reset takes the next")
    parser.add_argument("--reset-after-s", type=float, default=1.0, help="the cube, held up this long, is put back")
    args = parser.parse_args(argv)

    config = SimulatedSO101Config(
        name="so101_served",
        shift=args.shift,
        image_size=args.image_size,
        cameras=tuple(args.cameras.split(",")),
        bus_process=True,
    )
    simulation = SimulatedSO101(config)
    port = simulation.start(seed=args.seed)
    calibration_dir = Path(args.calibration_dir)
    simulation.write_calibration(calibration_dir, args.robot_id)
    from tmrl_vla.robots.config_scripted_expert import ScriptedExpertTeleopConfig
    from tmrl_vla.robots.scripted_expert import ScriptedExpertTeleop

    expert = ScriptedExpertTeleop(ScriptedExpertTeleopConfig(simulation=config.name, seed=args.seed))
    expert.connect()
    server = SceneServer(simulation, image_size=config.image_size, port=args.port, expert=expert.get_action).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ready = {"port": port, "scene_port": server.port, "calibration_dir": str(calibration_dir)}
    print("SIMULATION_READY " + json.dumps(ready), flush=True)
    print("LeRobot flags: " + lerobot_flags(port, args.robot_id, calibration_dir, server.port, config), flush=True)
    seed = args.seed
    try:
        while not stop.wait(0.05):
            held = simulation.held_for()  # a success once it reaches hold_s
            if held is not None and held >= max(args.reset_after_s, config.hold_s):
                seed += 1
                simulation.reset_scene(seed)
                expert.reset()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        expert.disconnect()
        simulation.stop()


if __name__ == "__main__":
    main()
