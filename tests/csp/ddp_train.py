"""Run by test_trainer under torchrun: a few CSP steps on 2 CPU processes, then one checksum per rank."""

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import torch
from lerobot.configs.default import DatasetConfig

from tmrl_vla.csp.trainer import CSPTrainConfig, train_csp

base, repo_id, root, out, data_loader = sys.argv[1:6]
config = CSPTrainConfig(
    steps=3, batch_size=4, warmup_steps=1, calibration_batches=1, log_every=1, num_threads=1, num_workers=1
)
result = train_csp(
    dataclasses.replace(config, data_loader=data_loader),
    base_policy_dir=base,
    dataset=DatasetConfig(repo_id=repo_id, root=str(root), video_backend="pyav"),
    out_dir=out,
    progress=False,
)
csp = result["csp"]
h = hashlib.sha256()
for name, p in sorted(csp.named_parameters(), key=lambda item: item[0]):
    if p.requires_grad:
        h.update(name.encode() + p.detach().numpy().tobytes())
rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
Path(out, f"rank{rank}.json").write_text(json.dumps({"hash": h.hexdigest(), "num_processes": result["num_processes"]}))
