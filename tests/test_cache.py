import json

import pytest

from tmrl_vla.cache import AssetCache, config_hash


def build_counter(calls):
    def build(work):
        calls.append(work)
        (work / "payload.txt").write_text("hello")
        return {"metric": 1.5}

    return build


def test_builds_once_then_reuses(tmp_path):
    cache, calls = AssetCache(tmp_path), []
    first = cache.get_or_build("demos", {"n": 3}, build_counter(calls), log=lambda _: None)
    second = cache.get_or_build("demos", {"n": 3}, build_counter(calls), log=lambda _: None)
    assert first.built and not second.built and len(calls) == 1
    assert first.path == second.path and (first.path / "payload.txt").read_text() == "hello"
    assert second.manifest["metric"] == 1.5 and second.manifest["hash"] == config_hash({"n": 3})
    assert not list(tmp_path.glob("*.partial"))


def test_other_config_gets_its_own_stage(tmp_path):
    cache, calls = AssetCache(tmp_path), []
    a = cache.get_or_build("demos", {"n": 3}, build_counter(calls), log=lambda _: None)
    b = cache.get_or_build("demos", {"n": 4}, build_counter(calls), log=lambda _: None)
    assert a.path != b.path and len(calls) == 2


def test_invalid_stage_is_rebuilt(tmp_path):
    cache, calls = AssetCache(tmp_path), []
    stage = cache.get_or_build("demos", {"n": 3}, build_counter(calls), log=lambda _: None)
    (stage.path / "manifest.json").write_text(json.dumps({"hash": "someone-else"}))
    rebuilt = cache.get_or_build("demos", {"n": 3}, build_counter(calls), log=lambda _: None)
    assert rebuilt.built and len(calls) == 2
    (stage.path / "manifest.json").unlink()  # a stage without a manifest is never trusted
    assert cache.lookup("demos", {"n": 3}) is None


def test_crash_leaves_no_valid_looking_stage_and_resumes_from_partial(tmp_path):
    cache = AssetCache(tmp_path)

    def crashing(work):
        (work / "checkpoint.txt").write_text("step 500")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("policy", {"steps": 9}, crashing, log=lambda _: None)
    assert cache.lookup("policy", {"steps": 9}) is None
    seen = {}

    def resuming(work):
        seen["checkpoint"] = (work / "checkpoint.txt").read_text()

    stage = cache.get_or_build("policy", {"steps": 9}, resuming, log=lambda _: None)
    assert seen["checkpoint"] == "step 500" and stage.built
    assert cache.lookup("policy", {"steps": 9}) == stage.path


def test_hash_is_stable_and_order_free():
    assert config_hash({"a": 1, "b": (1, 2)}) == config_hash({"b": [1, 2], "a": 1})


def test_a_non_main_process_only_runs_the_build(tmp_path):
    cache = AssetCache(tmp_path)
    ran = []
    result = cache.get_or_build("stage", {"a": 1}, lambda work: ran.append(work), log=lambda _: None, is_main=False)
    assert ran == [result.path.with_name(result.path.name + ".partial")]
    assert not result.path.exists() and not ran[0].exists()  # no directories, no manifest: the main process's job
