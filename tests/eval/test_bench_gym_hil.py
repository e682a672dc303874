"""eval/bench_gym_hil.py measures both rendering settings and ends with its JSON line (a few steps)."""

import importlib.util
import json
import math
from pathlib import Path

import pytest

pytest.importorskip("gym_hil")

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_gym_hil", ROOT / "eval" / "bench_gym_hil.py")
bench_gym_hil = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_gym_hil)


def test_bench_gym_hil_times_stock_and_fast_rendering(capsys):
    result = bench_gym_hil.main(["--steps", "2", "--stock-steps", "1", "--image-size", "32"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == result
    assert set(result) == {
        "image_size",
        "steps_stock_render",
        "steps_fast_render",
        "steps_per_s_stock_render",
        "steps_per_s_fast_render",
        "fast_render_speedup",
    }
    assert result["image_size"] == 32
    assert result["steps_stock_render"] == 1 and result["steps_fast_render"] == 2
    for key in ("steps_per_s_stock_render", "steps_per_s_fast_render", "fast_render_speedup"):
        value = result[key]
        assert isinstance(value, float) and math.isfinite(value) and value > 0, (key, value)
    ratio = result["steps_per_s_fast_render"] / result["steps_per_s_stock_render"]
    assert result["fast_render_speedup"] == pytest.approx(ratio, rel=0.01)  # the ratio of the two rates
