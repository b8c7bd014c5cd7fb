"""The router artifact: a directory with LightGBM's text model and a JSON manifest. No pickle.

``model.txt`` is LightGBM's own text format (readable, diffable, loadable by any LightGBM of
the same major version); ``manifest.json`` carries what it takes to use it: the feature
pipeline (columns, categories, the PCA as numbers), the strategy catalogue with each
strategy's expected compute per pair, the budgets, the training settings and metrics, the
library versions and a hash of the training data. Loading checks the manifest's format and
schema, the model file's SHA-256 and the LightGBM major version, and refuses a mismatch
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

from .pipeline import FeaturePipeline

FORMAT = "ttsopt-router"
SCHEMA_VERSION = 1
MODEL_FILE = "model.txt"
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

    @property
    def catalogue(self) -> dict[str, dict[str, Any]]:
        return self.manifest["catalogue"]


def save_artifact(path: str | Path, booster: Any, pipeline: FeaturePipeline, manifest: dict[str, Any]) -> Path:
    """Write ``model.txt`` then ``manifest.json`` (which names the model's hash), each atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model_text = booster.model_to_string()
    atomic_write_text(path / MODEL_FILE, model_text)
    full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **manifest,
            "model_file": MODEL_FILE, "model_sha256": hashlib.sha256(model_text.encode()).hexdigest(),
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
    model_path = path / manifest.get("model_file", MODEL_FILE)
    if not model_path.is_file():
        raise ArtifactError(f"{path}: the manifest names {model_path.name}, which is missing")
    text = model_path.read_text()
    if hashlib.sha256(text.encode()).hexdigest() != manifest.get("model_sha256"):
        raise ArtifactError(f"{model_path}: its SHA-256 is not the one in {MANIFEST_FILE}: the model or the "
                            "manifest was changed after training")
    trained = str(manifest.get("versions", {}).get("lightgbm", ""))
    if trained.split(".")[0] != lgb.__version__.split(".")[0]:
        raise ArtifactError(f"{path}: trained with LightGBM {trained}, this is {lgb.__version__} (another major "
                            "version): retrain it")
    try:
        pipeline = FeaturePipeline.from_dict(manifest["pipeline"])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{manifest_path}: feature pipeline: {e}") from None
    return RouterArtifact(lgb.Booster(model_str=text), pipeline, manifest)


__all__ = ["ArtifactError", "FORMAT", "RouterArtifact", "SCHEMA_VERSION", "library_versions", "load_artifact",
           "save_artifact"]
