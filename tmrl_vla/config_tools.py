"""Config plumbing shared by the jobs: command lines parsed over a preset, and what changed
between a run's saved config and the one it is resumed with."""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import draccus


def parse_config(preset, args: list[str] | None = None, aliases: dict[str, str] | None = None):
    """LeRobot-style dotted overrides (``--rl.sac.utd=3``) on top of ``preset``, a frozen dataclass.

    draccus starts from a config file when given one, so the preset is encoded to a temporary JSON
    file; fields the command line does not name keep the preset's values, except in a section whose
    ``type`` the command line changes (``--env.type=lerobot``): that one starts from its defaults, as
    LeRobot's ``--env.type`` does. ``aliases`` maps short flags to the dotted names they stand for.
    """
    args = sys.argv[1:] if args is None else list(args)
    aliases = aliases or {}
    resolved, retyped = [], []
    for arg in args:
        key, sep, value = arg.partition("=")
        key = aliases.get(key, key)
        resolved.append(key + sep + value)
        name = key.removeprefix("--").removesuffix(".type")
        section = getattr(preset, name, None) if key.endswith(".type") and "." not in name else None
        if dataclasses.is_dataclass(section) and getattr(section, "type", value) != value:
            if isinstance(section, draccus.ChoiceRegistry):  # LeRobot's --robot.type=...: another class
                retyped.append(name)
            else:
                preset = dataclasses.replace(preset, **{name: type(section)()})
    encoded = draccus.encode(preset)
    for name in retyped:  # built by draccus from the command line and the new type's defaults
        encoded.pop(name, None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preset.json"
        path.write_text(json.dumps(encoded))
        return draccus.parse(config_class=type(preset), config_path=path, args=resolved)


def flatten_config(config: dict, prefix: str = "") -> dict:
    """Nested config dicts -> {"sac.gamma": 0.99, ...}, so a difference names the field itself."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten_config(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(
    saved: dict, mine: dict, defaults: dict | None = None, ignore: tuple[str, ...] = ("total_decisions",)
) -> list[str]:
    """'field (saved vs now)' for every field (dotted, e.g. ``agent.hidden``) that differs, except ``ignore``.

    Both sides are compared as JSON (a tuple equals the list it is saved as). A field the saved
    config lacks, e.g. one added to the library after the checkpoint was written, counts as its
    value in ``defaults``: new options default to the old behaviour, so such a run still resumes.
    """
    saved, mine = (flatten_config(json.loads(json.dumps(c))) for c in (saved, mine))
    if defaults is not None:
        saved = flatten_config(json.loads(json.dumps(defaults))) | saved
    return [
        f"{k} ({saved.get(k)!r} vs {mine.get(k)!r})"
        for k in sorted(set(saved) | set(mine))
        if k not in ignore and saved.get(k) != mine.get(k)
    ]
