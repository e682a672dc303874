import json

from tmrl_vla.metrics import append_metrics, keep_metrics_until, read_metrics


def test_rows_append_and_read_back_skipping_a_torn_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, {"step": 1, "bc/loss": 0.5})
    append_metrics(path, {"step": 2, "bc/loss": 0.25})
    with path.open("a") as f:
        f.write('{"step": 3, "bc/lo')  # a crash mid-write
    assert read_metrics(path) == [{"step": 1, "bc/loss": 0.5}, {"step": 2, "bc/loss": 0.25}]


def test_a_resume_keeps_the_rows_up_to_its_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"decision": d}) + "\n" for d in (1, 2, 3, 4)) + '{"decision": 5,')
    keep_metrics_until(path, "decision", 2)
    assert path.read_text() == '{"decision": 1}\n{"decision": 2}\n'
    keep_metrics_until(tmp_path / "absent.jsonl", "decision", 2)  # no file yet: nothing to trim
    assert not (tmp_path / "absent.jsonl").exists()
