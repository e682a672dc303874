"""The package's layering (docs/design.md), checked on the import statements of every module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tmrl_vla"


def imports_of(module: Path) -> set[str]:
    """Every tmrl_vla module a file imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tmrl_vla"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("tmrl_vla")}
    return found


def modules(pattern: str) -> list[Path]:
    return sorted(PACKAGE.glob(pattern))


RULES = [
    # (files, forbidden import prefixes, why)
    (
        "csp/*.py",
        ("tmrl_vla.rl", "tmrl_vla.envs", "tmrl_vla.finetune", "tmrl_vla.assets"),
        "CSP knows nothing of RL or envs",
    ),
    ("backends/*.py", ("tmrl_vla.csp", "tmrl_vla.rl", "tmrl_vla.envs"), "backends only describe VLA families"),
    ("envs/*.py", ("tmrl_vla.csp", "tmrl_vla.rl", "tmrl_vla.policies", "tmrl_vla.bc"), "envs know nothing of policies"),
    (
        "robots/**/*.py",
        ("tmrl_vla.csp", "tmrl_vla.rl", "tmrl_vla.finetune", "tmrl_vla.robot_finetune"),
        "robots (hardware, safety, people) know nothing of the learning that drives them",
    ),
    (
        "rl/pretrained.py",
        ("tmrl_vla.rl.trainer", "tmrl_vla.rl.checkpoint", "tmrl_vla.rl.collector", "tmrl_vla.rl.run"),
        "the deployable agent pulls in no training loop",
    ),
    ("rl/[acdnrs]*.py", ("tmrl_vla.finetune", "tmrl_vla.assets"), "the library does not import the recipe's job"),
    (
        "policy/*.py",
        (
            "tmrl_vla.rl.trainer",
            "tmrl_vla.rl.checkpoint",
            "tmrl_vla.rl.collector",
            "tmrl_vla.rl.run",
            "tmrl_vla.finetune",
        ),
        "a deployed policy pulls in no training loop",
    ),
    ("training.py", ("tmrl_vla.csp", "tmrl_vla.rl"), "the supervised loop is generic"),
    ("robots/*.py", ("tmrl_vla.csp", "tmrl_vla.rl", "tmrl_vla.policy"), "the safety layer trusts no policy code"),
    ("noise.py", ("tmrl_vla.",), "pure maths"),
    ("sinusoidal.py", ("tmrl_vla.",), "pure maths"),
]


@pytest.mark.parametrize("pattern, forbidden, why", RULES, ids=[r[0] for r in RULES])
def test_layering(pattern, forbidden, why):
    files = modules(pattern)
    assert files, f"no module matches {pattern}"
    broken = {str(f.relative_to(PACKAGE)): sorted(i for i in imports_of(f) if i.startswith(forbidden)) for f in files}
    assert not {k: v for k, v in broken.items() if v}, why


def test_agent_layer_one_is_plain_torch():
    """The agent's maths and storage import no CSP, env or LeRobot code."""
    for name in ("config", "actor", "critic", "sac", "agent", "replay", "normalize", "distributed"):
        source = (PACKAGE / "rl" / f"{name}.py").read_text()
        tree = ast.parse(source)
        mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        bad = sorted(m for m in mods if m.startswith(("lerobot", "tmrl_vla.csp", "tmrl_vla.envs", "peft")))
        assert not bad, f"rl/{name}.py imports {bad}"
