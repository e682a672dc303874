"""The fine-tuning job on a robot, behind ``recipes/finetune_so101.py`` and ``recipes/finetune_franka.py``.

The robot is any LeRobot robot config (``--robot.type=so101_follower --robot.port=/dev/ttyACM0
--robot.id=my_arm --robot.cameras=...``), made by LeRobot's own factory; the policy and its CSP
adapter are a LeRobot checkpoint and an adapter (``--policy.path``, ``--csp.path``) or, by default,
the embedded tiny SmolVLA and its adapter, built into the cache as ``recipes/finetune_pick.py``
builds them. ``--simulated=true`` replaces the hardware with :class:`~tmrl_vla.robots.sim.so101.
SimulatedSO101` - the pick scene behind an emulated Feetech bus that LeRobot's unmodified driver
talks to, and ``mujoco_sim`` cameras - so the whole loop runs on a CPU, unattended with
``--person=simulated``. With ``--robot.type=franka_franky`` it starts
:class:`~tmrl_vla.robots.sim.franka.SimulatedFranka` instead: franky-sim's FR3 with a cube and
cameras, in franky-sim's own environment, which the ``franka_franky`` robot reaches over libfranka's
protocol on a loopback address. The embedded policy is an SO-100 policy; a Franka needs
``--policy.path``, except on the simulated Franka, where without one an untrained tiny SmolVLA of
the arm's shape drives it (to check the loop; it has nothing to fine-tune).

Every episode goes through :class:`~tmrl_vla.robots.env.RobotEnv` (safety always on, a person's
labels, each episode timed) and :func:`~tmrl_vla.rl.run.run_rl_on_robot` (one env, a checkpoint
whenever an episode ends, a stop when the person presses ``q``; ``--resume=true`` continues).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lerobot.robots import (  # noqa: F401  (each import registers its --robot.type, as in LeRobot's CLIs)
    RobotConfig,
    koch_follower,
    make_robot_from_config,
    omx_follower,
    openarm_follower,
    so_follower,
)
from lerobot.robots.so_follower import SO101FollowerConfig
from lerobot.teleoperators import (  # noqa: F401  (each import registers its --teleop.type)
    TeleoperatorConfig,
    gamepad,
    keyboard,
    so_leader,
)
from lerobot.utils.import_utils import register_third_party_plugins

from tmrl_vla.assets import AssetsConfig, build_default_assets
from tmrl_vla.cache import AssetCache
from tmrl_vla.config_tools import parse_config
from tmrl_vla.finetune import CSPSource, HubPush, PolicySource, default_rl, push_agent
from tmrl_vla.hub import check_repo_id
from tmrl_vla.rl.checkpoint import refuse_existing_run
from tmrl_vla.rl.config import TMRLConfig
from tmrl_vla.rl.run import run_rl_on_robot
from tmrl_vla.robots.config_scripted_expert import ScriptedExpertTeleopConfig
from tmrl_vla.robots.env import RobotEnv, RobotEnvConfig
from tmrl_vla.robots.intervention import TeleopIntervention
from tmrl_vla.robots.people import KeyboardPerson, SimulatedPerson
from tmrl_vla.robots.recorder import EpisodeRecorder
from tmrl_vla.robots.safety import safety_preset
from tmrl_vla.robots.sim.franka import HOME as FRANKA_HOME
from tmrl_vla.robots.sim.franka import SimulatedFranka, SimulatedFrankaConfig
from tmrl_vla.robots.sim.so101 import SimulatedSO101, SimulatedSO101Config, scene_units, widen_reply_window

SO10X = ("so100_follower", "so101_follower")
# The demonstrations' rewards (rl.demos) that match each of the robot env's rewards (env.reward).
DEMO_REWARDS = {
    "step_penalty": {"step_reward": -1.0, "success_reward": 0.0},
    "sparse": {"step_reward": 0.0, "success_reward": 1.0},
}
SIMULATABLE = (*SO10X, "franka_franky")


def robot_rl() -> TMRLConfig:
    """RL settings for a robot: the pick task's agent (``tmrl_vla.finetune.default_rl``) with one
    env, no separate evaluation episodes (``run_rl_on_robot`` checkpoints at every episode end
    instead), the success buffer on, and a success window of 20 episodes."""
    preset = default_rl()
    return dataclasses.replace(
        preset,
        sac=dataclasses.replace(preset.sac, success_buffer=True),
        # demonstrations (--rl.demos.repo_id) are paid as the robot's default reward pays its ticks
        demos=dataclasses.replace(preset.demos, **DEMO_REWARDS["step_penalty"]),
        num_envs=1,
        total_decisions=400,
        eval_episodes=0,
        success_window=20,
    )


def default_so101() -> RobotConfig:
    return SO101FollowerConfig(port="/dev/ttyACM0", id="my_so101")


@dataclass(frozen=True)
class RecordingConfig:
    record: bool = True  # record every episode as a LeRobot dataset (for the next CSP round)
    repo_id: str = "local/finetune_so101"  # the dataset's name (a Hub id if you push it later)
    root: str | None = None  # where it is written; None: <output_dir>/dataset
    video: bool = True  # cameras as video (LeRobot's default); False: PNG images


@dataclass(frozen=True)
class RobotFinetuneConfig:
    robot: RobotConfig = field(default_factory=default_so101)  # LeRobot's robot config (--robot.type=...)
    # Run against the simulated SO-101 (emulated servo bus + MuJoCo cameras) instead of hardware.
    simulated: bool = False
    simulation: SimulatedSO101Config = field(default_factory=SimulatedSO101Config)  # with --simulated=true
    # The simulated Franka, with --simulated=true and --robot.type=franka_franky.
    franka_simulation: SimulatedFrankaConfig = field(default_factory=SimulatedFrankaConfig)
    person: str = "keyboard"  # who labels and resets: "keyboard" (a person) or "simulated" (--simulated only)
    # The teleoperator a person takes the arm over with (key i), as LeRobot's --teleop.type=so101_leader
    # --teleop.port=...; None: no take-overs. On the simulated arm, scripted_expert_sim stands in for one.
    teleop: TeleoperatorConfig | None = None
    # The simulated person takes the arm over in every n-th episode (0: never), with --teleop
    # (default on the simulated arm: scripted_expert_sim).
    person_intervenes_every: int = 0
    person_intervenes_after: int = 20  # ... after this many ticks of the episode
    policy: PolicySource = field(default_factory=PolicySource)  # the policy to fine-tune
    csp: CSPSource = field(default_factory=CSPSource)  # its CSP adapter
    assets: AssetsConfig = field(default_factory=AssetsConfig)  # the embedded default's stages
    env: RobotEnvConfig = field(default_factory=RobotEnvConfig)  # control rate, episodes, rewards, units
    rl: TMRLConfig = field(default_factory=robot_rl)  # the RL run (TMRL or DSRL)
    dataset: RecordingConfig = field(default_factory=RecordingConfig)  # the episodes as a LeRobot dataset
    output_dir: str = "outputs/finetune_so101"  # everything the job writes goes under it
    cache_dir: str | None = None  # the assets' build cache; None: $TMRL_VLA_CACHE or ~/.cache/tmrl_vla
    resume: bool = False  # continue the run in output_dir from its newest checkpoint
    push_to_hub: bool = False  # upload the fine-tuned agent, with its card, to hub.repo_id at the end
    hub: HubPush = field(default_factory=HubPush)  # where and how --push_to_hub uploads

    @property
    def simulated_franka(self) -> bool:
        """The simulated arm is not an SO-10X (so, by check_config, the Franka of franky-sim): the
        embedded policy and the scripted expert, both made for the SO-101 scene, cannot drive it."""
        return self.simulated and self.robot.type not in SO10X


ALIASES = {"--agent": "--rl.agent.kind"}


def parse_args(preset: RobotFinetuneConfig, args: list[str] | None = None) -> RobotFinetuneConfig:
    """The command line over ``preset``; robot, camera and teleoperator plugins (``lerobot_robot_*``,
    e.g. ``franka_franky``) are registered first, as every LeRobot command line does."""
    register_third_party_plugins()
    return parse_config(preset, args, ALIASES)


def check_config(cfg: RobotFinetuneConfig) -> None:
    if cfg.person not in ("keyboard", "simulated"):
        raise ValueError(f"--person must be 'keyboard' or 'simulated', got {cfg.person!r}")
    if cfg.person == "simulated" and not cfg.simulated:
        raise ValueError("--person=simulated reads success from a simulation: it needs --simulated=true")
    if cfg.simulated and cfg.robot.type not in SIMULATABLE:
        raise ValueError(f"--simulated=true simulates {' or '.join(SIMULATABLE)}, not {cfg.robot.type!r}")
    if cfg.csp.path is not None and cfg.policy.path is None and cfg.simulated_franka:
        raise ValueError("--csp.path needs --policy.path here: without it an untrained policy drives the simulated arm")
    if cfg.push_to_hub:  # before the first episode, not after an hour of them
        if not cfg.hub.repo_id:
            raise ValueError("--push_to_hub=true needs --hub.repo_id=<user>/<name>")
        check_repo_id(cfg.hub.repo_id)
    if cfg.person_intervenes_every and cfg.person != "simulated":
        raise ValueError("--person_intervenes_every is the simulated person's: it needs --person=simulated")
    if cfg.robot.type not in SO10X and cfg.policy.path is None and not cfg.simulated:
        raise ValueError(
            f"the embedded policy drives an SO-100/SO-101; for a {cfg.robot.type} pass your policy with --policy.path"
        )
    demos = cfg.rl.demos
    paid = {"step_reward": demos.step_reward, "success_reward": demos.success_reward}
    if demos.enabled and paid != DEMO_REWARDS[cfg.env.reward]:
        flags = " ".join(f"--rl.demos.{k}={v}" for k, v in DEMO_REWARDS[cfg.env.reward].items())
        raise ValueError(
            f"the demonstrations are paid {paid} per tick but the robot's rewards are {cfg.env.reward!r}: "
            f"pass {flags}, so the critics see both on one scale"
        )
    if cfg.simulated_franka and cfg.person_intervenes_every and cfg.teleop is None:
        raise ValueError("the scripted expert that takes over for the simulated person drives the SO-101 scene only")


def embedded_policy_and_adapter(cfg: RobotFinetuneConfig) -> tuple[str, str | None]:
    """The embedded default's policy (built into the cache where missing) and the adapter the run
    reads: with ``--csp.path``, an adapter retrained on that policy (its loader checks the base's
    weights); for TMRL without it, the embedded adapter, the only case that builds it; none for DSRL."""
    embedded_csp = cfg.rl.agent.kind == "tmrl" and cfg.csp.path is None
    assets = build_default_assets(cfg.assets, AssetCache(cfg.cache_dir), csp=embedded_csp)
    return str(assets.policy_dir), str(assets.csp_dir) if embedded_csp else cfg.csp.path


def teleop_config(cfg: RobotFinetuneConfig) -> TeleoperatorConfig | None:
    """The take-over teleoperator: the one given, or on the simulated arm with a simulated person
    who intervenes, the scripted expert."""
    if cfg.teleop is not None:
        return cfg.teleop
    if cfg.simulated and cfg.person_intervenes_every and cfg.robot.type in SO10X:
        return ScriptedExpertTeleopConfig(simulation=cfg.simulation.name, seed=cfg.rl.seed)
    return None


def train(cfg: RobotFinetuneConfig) -> dict:
    check_config(cfg)
    out = Path(cfg.output_dir)
    if not cfg.resume:
        refuse_existing_run(out / cfg.rl.agent.kind)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
    summary: dict = {}
    if cfg.policy.path is None and cfg.simulated_franka:
        print(
            "[finetune] no --policy.path: an UNTRAINED tiny SmolVLA of the Franka's shape drives the simulated "
            "arm, to check the loop end to end (it has learned nothing, so there is nothing to fine-tune)"
        )
        policy, adapter = save_untrained_policy(
            out / "untrained_policy", cameras=cfg.franka_simulation.cameras, image_size=cfg.franka_simulation.image_size
        )
    elif cfg.policy.path is None:
        policy, adapter = embedded_policy_and_adapter(cfg)
    else:
        policy, adapter = cfg.policy.path, cfg.csp.path
    simulation = None
    if cfg.simulated:
        simulation = SimulatedFranka(cfg.franka_simulation) if cfg.simulated_franka else SimulatedSO101(cfg.simulation)
    robot_config, env_config = cfg.robot, cfg.env
    try:
        if isinstance(simulation, SimulatedFranka):
            robot_config = simulated_franka_setup(cfg, simulation, out)
        elif simulation is not None:
            robot_config, env_config = simulated_setup(cfg, simulation, out, embedded=cfg.policy.path is None)
        person = (
            SimulatedPerson(
                simulation,
                seed=cfg.rl.seed * 100_000,
                intervene_every=cfg.person_intervenes_every,
                intervene_after=cfg.person_intervenes_after,
            )
            if cfg.person == "simulated"
            else None
        )
        teleop = teleop_config(cfg)

        def make_robot_env(policy_config) -> RobotEnv:
            env = RobotEnv(
                connected(robot_config, simulated=simulation is not None),
                policy_config,
                safety_preset(robot_config.type),
                person or KeyboardPerson(),
                env_config,
            )
            if cfg.dataset.record:
                root = Path(cfg.dataset.root) if cfg.dataset.root else out / "dataset"
                recorder = EpisodeRecorder(
                    root,
                    cfg.dataset.repo_id,
                    fps=round(env_config.fps),
                    features=env.features,
                    task=env_config.task,
                    robot_type=robot_config.type,
                    use_videos=cfg.dataset.video,
                )
                env.attach_recorder(recorder)
            if teleop is not None:  # connected now: a missing or uncalibrated leader fails before the arm moves
                intervention = TeleopIntervention.from_config(
                    teleop, env.joint_names, toggle_requested=env.toggle_requested
                )
                intervention.connect()
                env.attach_intervention(intervention)
            return env

        start = time.perf_counter()
        # LeRobot registers one config class as both so100_follower and so101_follower: name it as the user did
        kind = "SO-100/SO-101 follower" if robot_config.type in SO10X else robot_config.type
        label = f"{kind} ({'simulated' if simulation is not None else robot_config.id})"
        commands = card_commands(cfg)
        summary["rl"] = run_rl_on_robot(
            cfg.rl,
            policy=policy,
            adapter=adapter,
            make_robot_env=make_robot_env,
            run_dir=out / cfg.rl.agent.kind,
            label=label,
            resume=cfg.resume,
            commands=commands,
        )
        summary["rl_seconds"] = time.perf_counter() - start
        if cfg.push_to_hub:
            summary["rl"]["commit_url"] = push_agent(cfg, summary["rl"]["policy"], commands, print)
    finally:
        if isinstance(simulation, SimulatedSO101):
            summary["simulation"] = {
                "torque_enabled_at_exit": [simulation.bus.torque_enabled(i) for i in simulation.bus.motor_ids],
                "physics_lagging_updates": simulation.lagging_updates,
            }
        if simulation is not None:
            simulation.stop()
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def card_commands(cfg: RobotFinetuneConfig) -> dict[str, str]:
    """The commands an agent's card shows: how it was trained (hardware details as placeholders)
    and how LeRobot's own ``lerobot-rollout`` runs it on the arm."""
    agent = cfg.hub.repo_id or "path/to/this/agent"
    recipe = "recipes/finetune_franka.py" if cfg.robot.type == "franka_franky" else "recipes/finetune_so101.py"
    policy = " --policy.path=<your policy> --csp.path=<its CSP adapter>" if cfg.policy.path else ""
    where = "--robot.ip=<the arm's address>" if cfg.robot.type == "franka_franky" else "--robot.port=<the arm's port>"
    # LeRobot registers one config class as both SO types, and its .type reads so100_follower
    kind = "so101_follower" if cfg.robot.type in SO10X else cfg.robot.type
    hardware = f"--robot.type={kind} {where} --robot.id=<your arm> --robot.cameras=<your cameras>"
    return {
        "train": f"python {recipe} {hardware}{policy} --rl.agent.kind={cfg.rl.agent.kind}",
        "evaluate": (  # on the arm, with LeRobot's own deployment tool
            f"lerobot-rollout --strategy.type=base {hardware} --policy.path={agent} "
            f'--task="{cfg.env.task}" --fps={cfg.env.fps:g} --duration=60'
        ),
    }


def connected(robot_config: RobotConfig, *, simulated: bool):
    """The robot made by LeRobot's factory, connected without calibrating. On the simulated SO-101
    its bus waits longer for replies (:func:`~tmrl_vla.robots.sim.so101.widen_reply_window`)."""
    robot = make_robot_from_config(robot_config)
    if simulated and robot_config.type in SO10X:
        widen_reply_window(robot.bus)
    robot.connect(calibrate=False)
    return robot


def simulated_setup(cfg: RobotFinetuneConfig, simulation: SimulatedSO101, out: Path, *, embedded: bool):
    """Start the simulation and point the robot config at it: its servo bus's port, a calibration
    file for it, and its cameras. The embedded policy was trained in the scene's units (radians),
    so unless ``--env.joint_scale`` says otherwise, the env converts LeRobot's degrees to them."""
    port = simulation.start(seed=cfg.rl.seed)
    calibration_dir = out / "calibration"
    simulation.write_calibration(calibration_dir, cfg.robot.id)
    cameras = simulation_cameras(cfg.simulation, cfg.env.fps)
    # The emulated bus answers from a thread of this process: on a loaded CPU a reply can miss
    # LeRobot's ~50 ms window now and then (about 1 read in 5000 at load 5 on 2 cores), which a real
    # bus never does; more retries keep a slow reply from ending the run.
    robot = dataclasses.replace(
        cfg.robot, port=port, calibration_dir=calibration_dir, cameras=cameras, num_read_retries=10
    )
    env = cfg.env
    if embedded and env.joint_scale is None:
        scale, offset = scene_units()
        env = dataclasses.replace(env, joint_scale=scale, joint_offset=offset)
    return robot, env


def simulated_franka_setup(cfg: RobotFinetuneConfig, simulation: SimulatedFranka, out: Path) -> RobotConfig:
    """Start the simulated Franka and point the robot config at it: its loopback address, no
    real-time kernel (franky-sim's), and the scene's cameras."""
    ip = simulation.start(seed=cfg.rl.seed)
    cameras = simulation_cameras(cfg.franka_simulation, cfg.env.fps)
    return dataclasses.replace(cfg.robot, ip=ip, realtime=False, cameras=cameras, calibration_dir=out / "calibration")


def simulation_cameras(simulation: SimulatedSO101Config | SimulatedFrankaConfig, fps: float) -> dict:
    """The robot's ``mujoco_sim`` cameras for a simulation's scene cameras, at its image size and
    camera rate (the control rate ``fps`` unless it sets one)."""
    from tmrl_vla.robots.sim.config_mujoco_sim_camera import MujocoSimCameraConfig

    size = simulation.image_size
    return {
        name: MujocoSimCameraConfig(
            camera=name, simulation=simulation.name, width=size, height=size, fps=simulation.camera_fps or int(fps)
        )
        for name in simulation.cameras
    }


def save_untrained_policy(directory: str | Path, *, cameras: tuple[str, ...], image_size: int) -> tuple[str, str]:
    """A tiny SmolVLA of the simulated Franka's shape (7 joints and the gripper; one image per
    camera), with random weights, and an untrained CSP adapter of it: (policy dir, adapter dir).
    Only for checking the loop on the simulated arm: it has learned nothing. Reused when present."""
    import torch
    from lerobot.policies.factory import make_pre_post_processors
    from lerobot.utils.constants import ACTION, OBS_IMAGES, OBS_STATE

    from tmrl_vla.csp.config import CSPConfig
    from tmrl_vla.csp.policy import CSPPolicy
    from tmrl_vla.models.tiny_smolvla import make_tiny_smolvla

    directory = Path(directory)
    policy_dir, adapter_dir = directory / "policy", directory / "csp_adapter"
    if (adapter_dir / "adapter_config.json").exists() or (adapter_dir / "config.json").exists():
        return str(policy_dir), str(adapter_dir)
    torch.manual_seed(0)
    dims = len(FRANKA_HOME) + 1  # the joints and the gripper
    policy = make_tiny_smolvla(
        image_keys=[f"{OBS_IMAGES}.{c}" for c in cameras], image_size=image_size, state_dim=dims, action_dim=dims
    )
    home = torch.tensor([*FRANKA_HOME, 0.04])
    stats = {key: {"mean": home, "std": torch.full((dims,), 0.5)} for key in (OBS_STATE, ACTION)}
    pre, post = make_pre_post_processors(policy.config, dataset_stats=stats)
    for part in (policy, pre, post):
        part.save_pretrained(policy_dir)
    CSPPolicy.from_base(policy, CSPConfig(noise_scale="none")).save_pretrained(adapter_dir)
    return str(policy_dir), str(adapter_dir)
