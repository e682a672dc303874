"""Fine-tune a VLA on an SO-101 (or SO-100) arm with TMRL, a person labelling each episode.

    python recipes/finetune_so101.py --simulated=true --person=simulated          # CPU, unattended
    python recipes/finetune_so101.py --simulated=true                             # you press the keys
    python recipes/finetune_so101.py --robot.port=/dev/ttyACM0 --robot.id=my_arm \
        --robot.cameras="{front: {type: opencv, index_or_path: 0, width: 640, height: 480, fps: 30}}" \
        --policy.path=you/your_smolvla --csp.path=you/your_smolvla_csp
    python recipes/finetune_so101.py ... --resume=true                            # after a crash or a quit

The arm must be calibrated (``lerobot-calibrate``); the job never starts a calibration itself. Keys:
[s] success, [f] failure, [e] e-stop on/off, [q] stop after this episode, [Enter] the scene is
reset. Every command goes through the safety layer (joint limits, speed, watchdog); the arm's
torque is turned off on every exit. Everything the job writes goes under --output_dir.
"""

from tmrl_vla.robot_finetune import RobotFinetuneConfig, parse_args, train

PRESET = RobotFinetuneConfig()

if __name__ == "__main__":
    train(parse_args(PRESET))
