"""The router artifact: a directory with LightGBM's text model and a JSON manifest. No pickle.

``model.txt`` is LightGBM's own text format (readable, diffable, loadable by any LightGBM of
the same major version); ``manifest.json`` carries what it takes to use it: the feature
pipeline (columns, categories, the PCA as numbers), the strategy catalogue with each
strategy's expected compute per pair, the budgets, the training settings and metrics, the
library versions and a hash of the training data. ``levels.txt``, where the training data has
levels, is the small LightGBM classifier of :mod:`.levels` (the question's level from its text,
for the level-binned cascade), named with its hash in the manifest too. Loading checks the manifest's format and
schema, the model files' SHA-256 and the LightGBM major version, and refuses a mismatch
with a message saying what differs.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ttsopt.data.files import atomic_write_text

from .levels import LevelModel
from .pipeline import FeaturePipeline

FORMAT = "ttsopt-router"
SCHEMA_VERSION = 1
MODEL_FILE = "model.txt"
LEVELS_FILE = "levels.txt"
MANIFEST_FILE = "manifest.json"


class ArtifactError(ValueError):
    """A router directory that cannot be used as it is: missing, tampered with, or of another version."""


def library_versions() -> dict[str, str]:
    import lightgbm
    import numpy
    import pandas

    from ttsopt import __version__

    return {"ttsopt": __version__, "lightgbm": lightgbm.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__, "python": platform.python_version()}


@dataclass
class RouterArtifact:
    booster: Any  # lightgbm.Booster
    pipeline: FeaturePipeline
    manifest: dict[str, Any]
    levels: LevelModel | None = None

    @property
    def catalogue(self) -> dict[str, dict[str, Any]]:
        return self.manifest["catalogue"]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def save_artifact(path: str | Path, booster: Any, pipeline: FeaturePipeline, manifest: dict[str, Any],
                  levels: LevelModel | None = None) -> Path:
    """Write ``model.txt`` (and ``levels.txt``) then ``manifest.json`` (which names their hashes), each
    atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_text = booster.model_to_string()
    atomic_write_text(path / MODEL_FILE, model_text)
    level_entry = None
    if levels is not None:
        level_text = levels.to_text()
        if level_text is not None:
            atomic_write_text(path / LEVELS_FILE, level_text)
        level_entry = {"file": None if level_text is None else LEVELS_FILE,
                       "sha256": None if level_text is None else _sha256(level_text),
                       "classes": levels.classes, "columns": levels.columns}
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest,
            "model_file": MODEL_FILE, "model_sha256": _sha256(model_text), "level_model": level_entry,
            "pipeline": pipeline.to_dict(), "versions": library_versions()}
    atomic_write_text(path / MANIFEST_FILE, json.dumps(full, indent=1, sort_keys=True) + "\n")
    return path


def load_artifact(path: str | Path) -> RouterArtifact:
    import lightgbm as lgb

    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST_FILE}; a router is the directory `ttsopt train --out` wrote")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{manifest_path}:{e.lineno}: not valid JSON ({e.msg})") from None
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{manifest_path}: not a ttsopt router manifest (format {manifest.get('format')!r})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(f"{manifest_path}: router schema {manifest.get('schema_version')}, this ttsopt reads "
                            f"{SCHEMA_VERSION}: retrain it with `ttsopt train`")
    text = _checked_text(path, manifest.get("model_file", MODEL_FILE), manifest.get("model_sha256"), "model")
    trained = str(manifest.get("versions", {}).get("lightgbm", ""))
    if trained.split(".")[0] != lgb.__version__.split(".")[0]:
        raise ArtifactError(f"{path}: trained with LightGBM {trained}, this is {lgb.__version__} (another major "
                            "version): retrain it")
    try:
        pipeline = FeaturePipeline.from_dict(manifest["pipeline"])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{manifest_path}: feature pipeline: {e}") from None
    return RouterArtifact(lgb.Booster(model_str=text), pipeline, manifest, _load_levels(path, manifest))


def _checked_text(path: Path, name: str, sha256: str | None, what: str) -> str:
    """The text of the file ``name`` under ``path``, refused unless its SHA-256 is the manifest's."""
    file = path / name
    if not file.is_file():
        raise ArtifactError(f"{path}: the manifest names {file.name}, which is missing")
    text = file.read_text()
    if _sha256(text) != sha256:
        raise ArtifactError(f"{file}: its SHA-256 is not the one in {MANIFEST_FILE}: the {what} or the "
                            "manifest was changed after training")
    return text


def _load_levels(path: Path, manifest: dict[str, Any]) -> LevelModel | None:
    entry = manifest.get("level_model")
    if not entry:
        return None
    text = _checked_text(path, entry["file"], entry.get("sha256"), "level model") if entry.get("file") else None
    return LevelModel.from_text(text, entry["classes"], entry["columns"])


__all__ = ["ArtifactError", "FORMAT", "LEVELS_FILE", "RouterArtifact", "SCHEMA_VERSION", "library_versions",
           "load_artifact", "save_artifact"]
