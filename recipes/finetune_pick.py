"""Fine-tune a VLA on the pick task with TMRL; with no arguments, the embedded default end to end.

    accelerate launch recipes/finetune_pick.py
    accelerate launch recipes/finetune_pick.py --agent=dsrl                 # the baseline
    accelerate launch recipes/finetune_pick.py --rl.total_decisions=1000 --resume=true
    accelerate launch recipes/finetune_pick.py --policy.path=DIR_OR_REPO --csp.path=DIR_OR_REPO \
        --env.shift=dim_light --output_dir=outputs/mine
    ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2 recipes/finetune_pick.py   # 2 CPU processes

The embedded default is a tiny real SmolVLA trained by behaviour cloning on scripted demos of an
SO-100-like pick-cube scene, then fine-tuned where the scene's context shifts (the front camera
moved): its CSP adapter is trained on the same demos and frozen, and a small SAC policy learns to
steer it, with ten expert demonstrations of the moved-camera task in its replay (--task_demos).
Missing assets are built into the cache ($TMRL_VLA_CACHE, default ~/.cache/tmrl_vla) and
reused. Everything the job writes goes under --output_dir (default outputs/finetune_pick).
"""

from tmrl_vla.finetune import FinetuneConfig, parse_args, train

PRESET = FinetuneConfig()

if __name__ == "__main__":
    train(parse_args(PRESET))
