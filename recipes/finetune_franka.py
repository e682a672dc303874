"""Fine-tune a VLA on a Franka arm (FR3 or Panda, through franky) with TMRL, a person labelling each episode.

    bash scripts/franka_sim.sh install                                         # once, for --simulated
    python recipes/finetune_franka.py --simulated=true --person=simulated      # CPU, unattended, loop check
    python recipes/finetune_franka.py --simulated=true --person=simulated --policy.path=you/your_franka_vla \
        --csp.path=you/your_franka_vla_csp                                     # your policy, simulated arm
    python recipes/finetune_franka.py --robot.ip=172.16.0.2 --robot.realtime=true \
        --robot.cameras="{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}" \
        --policy.path=you/your_franka_vla --csp.path=you/your_franka_vla_csp
    python recipes/finetune_franka.py ... --resume=true                        # after a crash or a quit

The simulated arm is franky-sim's FR3 with a cube and cameras (``SimulatedFranka``); without
``--policy.path`` an untrained tiny SmolVLA drives it, which checks the loop but has nothing to
learn. On the real arm, unlock the joints and activate FCI first; every command goes through the
safety layer (the FR3's joint limits, 0.01 rad per tick, watchdog) and franky's dynamics limits
(``--robot.dynamics_factor``), and the arm brakes to a stop on every exit. Keys: [s] success,
[f] failure, [e] e-stop on/off, [q] stop after this episode, [Enter] the scene is reset.
"""

from tmrl_vla.robot_finetune import RecordingConfig, RobotFinetuneConfig, parse_args, train
from tmrl_vla.robots.env import RobotEnvConfig
from tmrl_vla.robots.franka import FrankaConfig
from tmrl_vla.robots.sim.franka import HOME

PRESET = RobotFinetuneConfig(
    robot=FrankaConfig(ip="172.16.0.2", id="my_franka", dynamics_factor=0.2),
    env=RobotEnvConfig(
        fps=15.0,
        episode_length=150,  # 10 s
        home=(*HOME, 0.08),  # franky-sim's start pose, the gripper open (m)
        home_tolerance=0.02,  # rad (and m for the gripper)
        home_timeout_s=30.0,
    ),
    dataset=RecordingConfig(repo_id="local/finetune_franka"),
    output_dir="outputs/finetune_franka",
)

if __name__ == "__main__":
    train(parse_args(PRESET))
