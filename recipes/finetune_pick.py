"""Fine-tune a VLA on the pick task; with no arguments, the embedded default end to end.

    accelerate launch recipes/finetune_pick.py
    accelerate launch recipes/finetune_pick.py --output_dir=outputs/pick --assets.bc.steps=1000

The embedded default is a tiny real SmolVLA trained by behaviour cloning on scripted demos of an
SO-100-like pick-cube scene, fine-tuned where the scene's context shifts (the cube turns green).
Missing assets are built into the cache ($TMRL_VLA_CACHE, default ~/.cache/tmrl_vla) and reused.
"""

from tmrl_vla.finetune import FinetuneConfig, parse_args, train

PRESET = FinetuneConfig()

if __name__ == "__main__":
    train(parse_args(PRESET))
