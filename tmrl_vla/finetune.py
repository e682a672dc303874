"""The fine-tuning job behind ``recipes/finetune_pick.py``: config, CLI parsing and ``train(cfg)``.

Today it builds (or reuses) the embedded default's assets, evaluates the base policy where it was
taught, with swapped images, and on the fine-tuning shift, trains the CSP adapter on the demos,
and writes a report. The RL stage
(TMRL, and DSRL as its baseline) plugs in after the assets; until it exists the job says so.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tmrl_vla.assets import AssetsConfig, build_default_assets
from tmrl_vla.cache import AssetCache


@dataclass(frozen=True)
class FinetuneConfig:
    assets: AssetsConfig = field(default_factory=AssetsConfig)
    output_dir: str = "outputs/finetune_pick"
    cache_dir: str | None = None  # default: $TMRL_VLA_CACHE or ~/.cache/tmrl_vla


def parse_args(preset: FinetuneConfig, args: list[str] | None = None) -> FinetuneConfig:
    """LeRobot-style dotted overrides (``--assets.bc.steps=500``) on top of a preset.

    draccus starts from a config file when given one, so the preset is encoded to a temporary JSON
    file; fields the command line does not name keep the preset's values.
    """
    import tempfile

    import draccus

    args = sys.argv[1:] if args is None else list(args)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preset.json"
        path.write_text(json.dumps(draccus.encode(preset)))
        return draccus.parse(config_class=type(preset), config_path=path, args=args)


def train(cfg: FinetuneConfig) -> dict:
    """Run the job described by ``cfg``; returns a summary (also written to ``<output_dir>/summary.json``)."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes > 1:
        raise NotImplementedError(
            "The embedded default's stages (demos, BC, CSP) run in one process and the RL stage that would use "
            "several is not built yet: launch with one process (CSP training alone runs distributed through "
            "tmrl_vla.csp.trainer.train_csp)."
        )
    out = Path(cfg.output_dir)
    log = print if state.is_main_process else (lambda *_: None)
    timings: dict[str, float] = {}
    if state.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, default=str))
        start = time.perf_counter()
        assets = build_default_assets(cfg.assets, AssetCache(cfg.cache_dir), log=log)
        timings["assets_seconds"] = time.perf_counter() - start
    state.wait_for_everyone()
    if not state.is_main_process:
        return {}

    summary = {
        "demos": str(assets.demos_root),
        "base_policy": str(assets.policy_dir),
        "base_policy_eval": assets.eval,
        "csp_adapter": str(assets.csp_dir),
        "timings": {**timings, "build_seconds_by_stage": assets.timings},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_base_eval(assets.eval, out / "base_policy_success.png")
    log("")
    log(f"demos:        {assets.demos_root}")
    log(f"base policy:  {assets.policy_dir}  (SmolVLAPolicy.from_pretrained loads it)")
    for name, res in assets.eval.items():
        lo, hi = res["ci95"]
        log(f"base success  {name:<34} {res['success_rate']:.2f}  (95% CI {lo:.2f}-{hi:.2f}, n={res['episodes']})")
    log(f"CSP adapter:  {assets.csp_dir}  (CSPPolicy.from_pretrained(dir, base=policy))")
    log(f"report:       {out / 'summary.json'}, {out / 'base_policy_success.png'}")
    log("")
    log(
        "RL fine-tuning (TMRL, with DSRL as the baseline) is not wired into this recipe yet: "
        "it stops after the CSP adapter."
    )
    return summary


def plot_base_eval(results: dict, path: Path) -> None:
    """Bar chart of the base policy's success rates with 95% intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    rates = [results[n]["success_rate"] for n in names]
    # Error bars are distances from the rate; clip at 0 so intervals from older runs, whose bounds
    # could round to just inside the rate, still plot.
    lows = [max(0.0, r - results[n]["ci95"][0]) for n, r in zip(names, rates, strict=True)]
    highs = [max(0.0, results[n]["ci95"][1] - r) for n, r in zip(names, rates, strict=True)]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(
        range(len(names)), rates, yerr=[lows, highs], capsize=4, color=["#4c72b0", "#999999", "#dd8452"][: len(names)]
    )
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title("Base policy (BC) success, 95% Wilson intervals")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
