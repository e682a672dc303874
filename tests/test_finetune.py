import json

from tmrl_vla.assets import AssetsConfig, EvalConfig
from tmrl_vla.bc import BCConfig
from tmrl_vla.csp.trainer import CSPTrainConfig
from tmrl_vla.data.demos import DemoConfig
from tmrl_vla.finetune import FinetuneConfig, parse_args, train


def tiny_preset(tmp_path) -> FinetuneConfig:
    return FinetuneConfig(
        assets=AssetsConfig(
            demos=DemoConfig(num_episodes=2),
            bc=BCConfig(steps=3, batch_size=4, warmup_steps=1, num_threads=1),
            eval=EvalConfig(episodes=2, num_envs=2),
            csp=CSPTrainConfig(steps=2, batch_size=4, warmup_steps=1, calibration_batches=1, num_threads=1),
        ),
        output_dir=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
    )


def test_overrides_apply_on_top_of_the_preset(tmp_path):
    preset = tiny_preset(tmp_path)
    cfg = parse_args(
        preset, ["--assets.bc.steps=7", "--output_dir=elsewhere", "--assets.eval.finetune_shift=dim_light"]
    )
    assert cfg.assets.bc.steps == 7 and cfg.output_dir == "elsewhere"
    assert cfg.assets.eval.finetune_shift == "dim_light"
    assert cfg.assets.demos.num_episodes == 2  # untouched fields keep the preset's value
    assert parse_args(preset, []) == preset


def test_recipe_smoke_builds_assets_then_reuses_them(tmp_path, capsys):
    cfg = tiny_preset(tmp_path)
    summary = train(cfg)
    out = tmp_path / "out"
    assert json.loads((out / "config.json").read_text())["assets"]["bc"]["steps"] == 3
    assert (out / "base_policy_success.png").stat().st_size > 1000
    written = json.loads((out / "summary.json").read_text())
    assert set(written["base_policy_eval"]) == {
        "in_distribution",
        "in_distribution_swapped_images",
        f"finetune_{cfg.assets.eval.finetune_shift}",
    }
    for result in written["base_policy_eval"].values():
        assert 0.0 <= result["success_rate"] <= 1.0 and result["episodes"] == 2
    assert "not wired into this recipe yet" in capsys.readouterr().out

    again = train(cfg)
    log = capsys.readouterr().out
    assert log.count("reusing") == 4 and "building" not in log
    assert (tmp_path / "cache").joinpath(again["csp_adapter"]).is_dir()
    assert set(written["timings"]["build_seconds_by_stage"]) == {"demos", "base_policy", "base_eval", "csp_adapter"}
    assert again["base_policy"] == summary["base_policy"]


def test_plot_handles_perfect_and_zero_rates(tmp_path):
    from tmrl_vla.finetune import plot_base_eval
    from tmrl_vla.rollout import wilson_interval

    results = {
        "in_distribution": {"success_rate": 1.0, "ci95": list(wilson_interval(50, 50)), "episodes": 50},
        "shifted": {"success_rate": 0.0, "ci95": list(wilson_interval(0, 50)), "episodes": 50},
        "rounded": {"success_rate": 1.0, "ci95": [0.93, 0.9999999999999999], "episodes": 50},
    }
    plot_base_eval(results, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000
