"""Run by test_tmrl_trainer: a small TMRL run on the tiny policy, in one process (killed with SIGKILL
and resumed by one test) or under torchrun with two (another test compares the ranks' weights)."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator

from tmrl_vla.csp.config import CSPConfig
from tmrl_vla.csp.policy import CSPPolicy
from tmrl_vla.envs.pick_cube import PickCubeConfig, PickCubeEnv
from tmrl_vla.policies import load_lerobot_policy
from tmrl_vla.rl.config import AgentConfig, SACConfig, TMRLConfig
from tmrl_vla.rl.trainer import TMRLTrainer

base, out, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
state = Accelerator()  # sets up the process group under torchrun / accelerate launch
torch.set_num_threads(1)
policy, pre, post = load_lerobot_policy(base)
csp = CSPPolicy.from_base(policy, CSPConfig(noise_scale="none"))
config = TMRLConfig(
    agent=AgentConfig(hidden=16, num_critics=2),
    sac=SACConfig(utd=2, batch_size=4, warmup_decisions=2),
    num_envs=2,
    total_decisions=total,
    eval_every=10**6,
    eval_episodes=2,
    save_every=1,
)
trainer = TMRLTrainer(
    config,
    csp=csp,
    preprocessor=pre,
    postprocessor=post,
    make_env=lambda: PickCubeEnv(PickCubeConfig(episode_length=6)),
    out_dir=out,
)
result = trainer.train()
trainer.close()
weights = torch.cat([p.detach().reshape(-1) for p in trainer.agent.parameters()])
result |= {
    "replay_added": trainer.replay.total_added,
    "weights_sum": float(weights.double().sum()),
    "weights_abs_sum": float(weights.double().abs().sum()),
    "first_obs": trainer.replay.obs[0].tolist(),
}
Path(out, f"result{state.process_index}.json").write_text(json.dumps(result))
