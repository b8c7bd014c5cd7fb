"""Sweep configs that ship with ttsopt, addressable by name (``ttsopt sweep arith-embedded``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def preset_names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in files("ttsopt.train.sweep").joinpath("configs").iterdir()
                  if p.name.endswith((".yaml", ".toml")))


def preset_config_path(name: str) -> Path:
    """The file of a named preset; a clear error lists the presets when the name is unknown."""
    for suffix in (".yaml", ".toml"):
        p = files("ttsopt.train.sweep").joinpath("configs", name + suffix)
        if p.is_file():
            return Path(str(p))
    raise FileNotFoundError(f"no sweep config file or preset named {name!r}; presets: {', '.join(preset_names())}")
