"""Train a CSP adapter for your own LeRobot VLA on your own LeRobotDataset (video or images).

    accelerate launch recipes/train_csp.py --policy.path=lerobot/smolvla_base \
        --dataset.repo_id=you/your_dataset --output_dir=outputs/csp_mine
    accelerate launch recipes/train_csp.py --policy.path=outputs/train/my_smolvla/checkpoints/last/pretrained_model \
        --dataset.repo_id=local/mine --dataset.root=data/mine --steps=4000 --batch_size=16 --num_workers=4
    accelerate launch recipes/train_csp.py ... --output_dir=outputs/csp_mine --resume=true   # continue a run
    accelerate launch recipes/train_csp.py ... --push_to_hub=true --hub.repo_id=you/smolvla_csp
    accelerate launch --num_processes 4 recipes/train_csp.py ...                          # 4 GPUs

The base policy stays frozen: the adapter is a LoRA plus a sigma embedding, trained with the policy's
own flow-matching loss while its image and language context is noised at a random sigma. Batches
are read as lerobot-train reads them (LeRobotDataset, action chunks from the policy's config,
videos decoded per batch, --dataset.image_transforms.enable=true for LeRobot's augmentations).
Checkpoints land in <output_dir>/checkpoints/<step>/pretrained_model; each runs with
``lerobot-eval --policy.path=<it> --policy.use_peft=true`` and with
``CSPPolicy.from_pretrained(<it>)``, and ``accelerate launch recipes/finetune_pick.py
--policy.path=<base> --csp.path=<it>`` fine-tunes with TMRL on top of it. Every option:
docs/configuration.md.
"""

from tmrl_vla.csp.job import parse_args, train

if __name__ == "__main__":
    train(parse_args())
