"""eval/bench_csp_data.py: one timed training process, its memory sampled across its workers."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "bench_csp_data.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_csp_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_one_streamed_video_run_is_timed_and_its_process_tree_measured(bench, tmp_path, tiny_base_policy):
    repo_id, root = bench.record(tmp_path, episodes=2, video=True)
    assert (root / "videos").is_dir()
    assert bench.record(tmp_path, episodes=2, video=True) == (repo_id, root)  # recorded once, then reused
    got = bench.run_one(tiny_base_policy, repo_id, root, "stream", steps=2, workers=1, threads=1, out=tmp_path / "run")
    assert set(got) == {"wall_s", "loop_s", "steps_per_s", "peak_pss_mb"}
    assert 0 < got["loop_s"] < got["wall_s"] and got["steps_per_s"] == pytest.approx(2 / got["loop_s"])
    assert 100 < got["peak_pss_mb"] < 20_000  # torch alone is a few hundred MB
    assert (tmp_path / "run" / "adapter_model.safetensors").exists()
