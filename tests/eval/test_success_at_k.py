import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("success_at_k", ROOT / "eval" / "success_at_k.py")
success_at_k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(success_at_k)


class Loaded(Exception):
    """Raised where the script has decided which base and adapter it runs."""


@pytest.mark.parametrize("given", [(), ("--adapter",), ("--base",), ("--base", "--adapter")])
def test_a_given_base_or_adapter_is_used_and_only_the_missing_one_is_the_default(given, monkeypatch, tmp_path):
    from tmrl_vla.csp.policy import CSPPolicy

    defaults = (tmp_path / "default_base", tmp_path / "default_adapter")
    monkeypatch.setattr(success_at_k, "default_assets", lambda: defaults)
    loaded = []
    monkeypatch.setattr("tmrl_vla.policies.load_lerobot_policy", lambda path: (loaded.append(path), None, None))

    def from_pretrained(adapter, base):
        raise Loaded(adapter)

    monkeypatch.setattr(CSPPolicy, "from_pretrained", from_pretrained)
    argv = [x for flag in given for x in (flag, str(tmp_path / flag.strip("-")))]
    with pytest.raises(Loaded) as adapter:
        success_at_k.main([*argv, "--out", str(tmp_path / "out")])
    base = tmp_path / "base" if "--base" in given else defaults[0]
    assert loaded == [base, base]
    assert adapter.value.args[0] == (tmp_path / "adapter" if "--adapter" in given else defaults[1])
