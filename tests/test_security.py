"""No code path of ours unpickles a file or runs a repo's code.

Weights and statistics travel as safetensors and JSON. A pickle (``torch.load``, ``pickle``,
``joblib``, ``numpy.load(allow_pickle=True)``) runs whatever the file says when it is read, and
``trust_remote_code=True`` imports a Hub repo's Python: either turns a downloaded checkpoint into
code execution. The scan reads the syntax tree, so comments and strings that mention these names
do not count, and an aliased import (``import torch as th; th.load``) does.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("tmrl_vla", "recipes", "eval", "plugins")

PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "cloudpickle", "dill")
# functions that unpickle, by the module they are reached through
LOADERS = {"torch.load", "torch.serialization.load", "joblib.load"} | {
    f"{module}.{name}" for module in PICKLE_MODULES for name in ("load", "loads", "Unpickler")
}
KEYWORDS = ("trust_remote_code", "allow_pickle")


def _is_false(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value in (False, None)


def _dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``a.b.c`` for an attribute chain on a name, the name replaced by the module it was imported as."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def forbidden(source: str, filename: str = "<source>") -> list[str]:
    """``"file:line: what"`` for each unpickling or remote-code construct in ``source``.

    A keyword is reported unless its value is literally False or None: a variable that could be
    True is as much a way in as the constant itself.
    """
    tree = ast.parse(source, filename=filename)
    aliases: dict[str, str] = {}  # local name -> the module it is bound to
    found = []

    def report(node: ast.AST, what: str) -> None:
        found.append((node.lineno, f"{filename}:{node.lineno}: {what}"))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.asname:
                    aliases[name.asname] = name.name
                if name.name.split(".")[0] in PICKLE_MODULES:
                    report(node, f"import {name.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                report(node, f"from {node.module} import ...")
                continue
            for name in node.names:
                if f"{node.module}.{name.name}" in LOADERS:
                    report(node, f"from {node.module} import {name.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            called = _dotted(node.func, aliases)
            if called in LOADERS:
                report(node, f"{called}(...)")
            for keyword in node.keywords:
                if keyword.arg in KEYWORDS and not _is_false(keyword.value):
                    report(keyword.value, f"{keyword.arg}={ast.unparse(keyword.value)}")
        elif isinstance(node, ast.Dict):  # f(**{"trust_remote_code": True})
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in KEYWORDS and not _is_false(value):
                    report(key, f"{key.value}: {ast.unparse(value)}")
    return [line for _, line in sorted(found, key=lambda item: item[0])]


def scanned_files() -> list[Path]:
    return sorted(p for folder in SCANNED if (ROOT / folder).is_dir() for p in (ROOT / folder).rglob("*.py"))


def test_no_code_of_ours_unpickles_or_trusts_remote_code():
    files = scanned_files()
    assert len([p for p in files if p.is_relative_to(ROOT / "tmrl_vla")]) > 20  # the package was found
    problems = [line for path in files for line in forbidden(path.read_text(), str(path.relative_to(ROOT)))]
    assert problems == [], "unpickling or remote code:\n" + "\n".join(problems)


FORBIDDEN_SOURCE = """\
import torch
import torch as th
import torch.nn as nn
import pickle
import cloudpickle
import joblib
from joblib import load
from torch import load as torch_load
import numpy as np
from transformers import AutoModel

state = torch.load("state.pt", weights_only=True)
state = th.load("state.pt")
obj = pickle.loads(b"")
model = AutoModel.from_pretrained("x/y", trust_remote_code=True)
data = np.load("a.npy", allow_pickle=True)
est = joblib.load("model.joblib")
trust = True
model = AutoModel.from_pretrained("x/y", trust_remote_code=trust)
model = AutoModel.from_pretrained("x/y", **{"trust_remote_code": True})
from pickle import Unpickler
import dill
state = torch.serialization.load("state.pt")
layer = nn.load("torch.nn has no load: not torch.load")
"""


def test_the_scan_reports_each_forbidden_construct_with_its_line():
    assert forbidden(FORBIDDEN_SOURCE, "bad.py") == [
        "bad.py:4: import pickle",
        "bad.py:5: import cloudpickle",
        "bad.py:7: from joblib import load",
        "bad.py:8: from torch import load",
        "bad.py:12: torch.load(...)",
        "bad.py:13: torch.load(...)",
        "bad.py:14: pickle.loads(...)",
        "bad.py:15: trust_remote_code=True",
        "bad.py:16: allow_pickle=True",
        "bad.py:17: joblib.load(...)",
        "bad.py:19: trust_remote_code=trust",
        "bad.py:20: trust_remote_code: True",
        "bad.py:21: from pickle import ...",
        "bad.py:22: import dill",
        "bad.py:23: torch.serialization.load(...)",
    ]


@pytest.mark.parametrize(
    "source",
    [
        "from safetensors.torch import load_file\nstate = load_file('model.safetensors')\n",
        "import torch\ntorch.save({}, 'x.pt')\nx = torch.zeros(2)\n",
        "import numpy as np\nx = np.load('a.npy', allow_pickle=False)\n",
        "from transformers import AutoModel\nm = AutoModel.from_pretrained('x/y', trust_remote_code=False)\n",
        "# torch.load(path) and pickle.loads in a comment\ntext = 'trust_remote_code=True'\n",
        "import json\nconfig = json.load(open('config.json'))\n",
    ],
)
def test_the_scan_lets_data_only_loading_through(source):
    assert forbidden(source) == []
