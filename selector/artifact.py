"""The router artifact: a directory with LightGBM's text model and a JSON manifest. No pickle.

``model.txt`` is LightGBM's own text format (readable, diffable, loadable by any LightGBM of
the same major version); ``manifest.json`` carries what it takes to use it: the feature
pipeline (columns, categories, the PCA as numbers), the strategy catalogue with each
strategy's expected compute per pair, the budgets, the training settings and metrics, the
library versions and a hash of the training data. ``levels.txt``, where the training data has
levels, is the small LightGBM classifier of :mod:`.levels` (the question's level from its text,
for the level-binned cascade), named with its hash in the manifest too.

The artifact checks itself on load, and refuses a mismatch with a message naming the file and
the field:

* the manifest's format and schema version;
* the manifest's own content: ``manifest_sha256`` (written by :func:`save_artifact`) holds the
  SHA-256 of the manifest's canonical JSON (sorted keys, no white space, without
  ``manifest_sha256`` itself) and a short digest per top-level field and per entry of a
  top-level mapping, so an edit after training is refused and the edited field named
  (``level_model.columns``); a manifest without it (written before it existed) still loads,
  with an :class:`ArtifactWarning`;
* the model files' SHA-256 and the LightGBM major version;
* every feature list of the manifest against the model files themselves: ``pipeline.columns``
  against ``model.txt``'s ``feature_names=``, ``pipeline.categorical`` against its
  ``[categorical_feature: ...]``, ``pipeline.categories`` against its ``pandas_categorical``,
  ``level_model.columns`` against ``levels.txt``'s features (by name where it has names, else
  by count) and the pipeline's columns, ``level_model.classes`` against its ``num_class``.

:func:`write_manifest` is the one writer of ``manifest.json`` (a tool that changes a manifest on
purpose re-seals it through it).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import warnings
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
#: The manifest's digest of itself: ``{"content": sha256, "fields": {field: sha256[:16]}}``.
DIGEST_FIELD = "manifest_sha256"
_FIELD_DIGEST_CHARS = 16


class ArtifactError(ValueError):
    """A router directory that cannot be used as it is: missing, tampered with, or of another version."""


class ArtifactWarning(UserWarning):
    """A router directory that loads but cannot be fully checked (written before a check existed)."""


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
    write_manifest(path, full)
    return path


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def manifest_digest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest``'s digest of itself: the SHA-256 of its canonical JSON without :data:`DIGEST_FIELD`
    (``content``) and a short one per top-level field and per entry of a top-level mapping (``fields``,
    keyed ``"pipeline"``, ``"pipeline.columns"``: they name what an edit changed)."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    fields = {}
    for key, value in body.items():
        fields[key] = _sha256(_canonical(value))[:_FIELD_DIGEST_CHARS]
        if isinstance(value, dict):
            for sub, inner in value.items():
                fields[f"{key}.{sub}"] = _sha256(_canonical(inner))[:_FIELD_DIGEST_CHARS]
    return {"content": _sha256(_canonical(body)), "fields": fields}


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as ``path/manifest.json`` (atomically), sealed with its digest
    (:data:`DIGEST_FIELD`, any old one replaced). The digest is of what a reader will parse
    back (tuples as lists, keys as strings), so it verifies on load."""
    path = Path(path)
    body = json.loads(json.dumps({k: v for k, v in manifest.items() if k != DIGEST_FIELD}))
    body[DIGEST_FIELD] = manifest_digest(body)
    atomic_write_text(path / MANIFEST_FILE, json.dumps(body, indent=1, sort_keys=True) + "\n")
    return path / MANIFEST_FILE


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
    _check_digest(manifest_path, manifest)
    model_file = manifest.get("model_file", MODEL_FILE)
    text = _checked_text(path, model_file, manifest.get("model_sha256"), "model")
    trained = str(manifest.get("versions", {}).get("lightgbm", ""))
    if trained.split(".")[0] != lgb.__version__.split(".")[0]:
        raise ArtifactError(f"{path}: trained with LightGBM {trained}, this is {lgb.__version__} (another major "
                            "version): retrain it")
    entry = manifest.get("level_model")
    level_text = (_checked_text(path, entry["file"], entry.get("sha256"), "level model")
                  if isinstance(entry, dict) and entry.get("file") else None)
    _check_feature_lists(manifest_path, manifest, model_file, text, level_text)
    try:
        pipeline = FeaturePipeline.from_dict(manifest["pipeline"])
    except (KeyError, ValueError) as e:
        raise ArtifactError(f"{manifest_path}: feature pipeline: {e}") from None
    levels = LevelModel.from_text(level_text, entry["classes"], entry["columns"]) if entry else None
    return RouterArtifact(lgb.Booster(model_str=text), pipeline, manifest, levels)


def _check_digest(manifest_path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose content is not the one its :data:`DIGEST_FIELD` records, naming the
    fields that differ; warn (and go on) where it has none (written before it existed)."""
    recorded = manifest.get(DIGEST_FIELD)
    if recorded is None:
        warnings.warn(f"{manifest_path}: no {DIGEST_FIELD} (written by an older ttsopt): an edit of the manifest "
                      "after training cannot be detected; retrain it with `ttsopt train` to have it sealed",
                      ArtifactWarning, stacklevel=3)
        return
    actual = manifest_digest(manifest)
    if isinstance(recorded, dict) and recorded.get("content") == actual["content"]:
        return
    fields = recorded.get("fields") if isinstance(recorded, dict) else None
    if not isinstance(fields, dict):
        raise ArtifactError(f"{manifest_path}: its {DIGEST_FIELD} is not a digest this ttsopt writes "
                            f"({_canonical(recorded)[:80]}): the manifest was changed after training; retrain it")
    names = sorted(set(fields) | set(actual["fields"]))
    status = {n: "added" if n not in fields else "removed" if n not in actual["fields"] else "changed"
              for n in names if fields.get(n) != actual["fields"].get(n)}
    what = [f"{n} ({how})" for n, how in status.items() if _most_specific(n, status, manifest)]
    if not what:  # every field matches: the digest itself was edited
        raise ArtifactError(f"{manifest_path}: field {DIGEST_FIELD}.content was changed: it is not the digest of "
                            "the manifest's content; retrain it with `ttsopt train`")
    raise ArtifactError(f"{manifest_path}: field{'s' if len(what) > 1 else ''} {', '.join(what)} edited after "
                        f"training: the manifest's content is not the one its {DIGEST_FIELD} records; restore the "
                        "manifest `ttsopt train` wrote, or retrain")


def _most_specific(name: str, status: dict[str, str], manifest: dict[str, Any]) -> bool:
    """Whether a differing digest's ``name`` is the one to report: an entry of a mapping rather than the
    mapping where the mapping is still one, the field alone where it came, went or stopped being one."""
    top = name.split(".", 1)[0]
    mapping = isinstance(manifest.get(top), dict) and status.get(top) == "changed"
    return mapping != (top == name)


def _model_features(text: str) -> dict[str, Any]:
    """What a LightGBM text model says of its inputs: ``names`` (``feature_names=``), ``count``
    (``max_feature_idx`` + 1), ``num_class``, ``categorical`` (the indices of
    ``[categorical_feature: ...]``, None when absent) and ``pandas_categorical`` (None when absent)."""
    def field(pattern: str) -> str | None:
        m = re.search(pattern, text, flags=re.MULTILINE)
        return None if m is None else m.group(1).strip()

    names = (field(r"^feature_names=(.*)$") or "").split()
    count = field(r"^max_feature_idx=(-?\d+)$")
    categorical = field(r"^\[categorical_feature:(.*)\]$")
    pandas = None
    found = re.findall(r"^pandas_categorical:(.*)$", text, flags=re.MULTILINE)
    if found:
        try:
            pandas = json.loads(found[-1])
        except json.JSONDecodeError:
            pandas = None
    return {"names": names, "count": len(names) if count is None else int(count) + 1,
            "num_class": int(field(r"^num_class=(\d+)$") or 1),
            "categorical": None if categorical is None else [int(i) for i in categorical.split(",") if i.strip()],
            "pandas_categorical": pandas}


def _list_differs(listed: list[Any], trained: list[Any]) -> str | None:
    """How ``listed`` (the manifest's) differs from ``trained`` (the model file's), or None."""
    if listed == trained:
        return None
    missing = [c for c in trained if c not in listed]
    extra = [c for c in listed if c not in trained]
    parts = [f"lacks {missing}"] * bool(missing) + [f"has {extra}, which the model was not trained on"] * bool(extra)
    return "; ".join(parts) or f"has the same names in another order ({listed} vs {trained})"


def _check_feature_lists(manifest_path: Path, manifest: dict[str, Any], model_file: str, model_text: str,
                         level_text: str | None) -> None:
    """Every feature list of the manifest against the model files' own (see the module docstring)."""
    def refuse(field: str, file: str, why: str) -> None:
        raise ArtifactError(f"{manifest_path}: {field} does not match {file}: it {why}; the manifest was "
                            "changed after training (or written for another model): retrain it")

    def as_list(field: str, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise ArtifactError(f"{manifest_path}: {field} is {type(value).__name__}, not a list")
        return value

    pipe = manifest.get("pipeline")
    if not isinstance(pipe, dict):
        raise ArtifactError(f"{manifest_path}: no pipeline (the feature pipeline): retrain it")
    model = _model_features(model_text)
    columns = as_list("pipeline.columns", pipe.get("columns"))
    why = _list_differs(columns, model["names"])
    if why:
        refuse("pipeline.columns", f"{model_file}'s feature_names=", why)
    if model["categorical"] is not None:
        trained_cat = [model["names"][i] for i in model["categorical"] if 0 <= i < len(model["names"])]
        if "categorical" in pipe:
            why = _list_differs(sorted(as_list("pipeline.categorical", pipe["categorical"])), sorted(trained_cat))
            if why:
                refuse("pipeline.categorical", f"{model_file}'s categorical_feature", why)
        categories = pipe.get("categories")
        if not isinstance(categories, dict):
            raise ArtifactError(f"{manifest_path}: pipeline.categories is not a mapping")
        why = _list_differs(sorted(categories), sorted(trained_cat))
        if why:
            refuse("pipeline.categories", f"{model_file}'s categorical_feature", why)
        pandas = model["pandas_categorical"]
        if isinstance(pandas, list) and len(pandas) == len(trained_cat):
            for name, trained in zip(trained_cat, pandas):
                why = _list_differs([str(c) for c in as_list(f"pipeline.categories.{name}", categories[name])],
                                    [str(c) for c in trained])
                if why:
                    refuse(f"pipeline.categories.{name}", f"{model_file}'s pandas_categorical", why)
    entry = manifest.get("level_model")
    if not entry:
        return
    if not isinstance(entry, dict):
        raise ArtifactError(f"{manifest_path}: level_model is {type(entry).__name__}, not a mapping")
    level_columns = as_list("level_model.columns", entry.get("columns"))
    classes = as_list("level_model.classes", entry.get("classes"))
    outside = [c for c in level_columns if c not in columns]
    if outside:
        refuse("level_model.columns", "pipeline.columns", f"has {outside}, which the feature pipeline does not compute")
    if level_text is None:
        if len(classes) != 1:
            raise ArtifactError(f"{manifest_path}: level_model names no file but {len(classes)} classes (without a "
                                "model file there is one level): the manifest was changed after training")
        return
    level_file = entry["file"]
    level = _model_features(level_text)
    if level["names"] and level["names"] != [f"Column_{i}" for i in range(len(level["names"]))]:
        why = _list_differs(level_columns, level["names"])
    elif len(level_columns) != level["count"]:  # LightGBM's default names (fitted on an array): the count
        why = f"names {len(level_columns)} columns, the model reads {level['count']}"
    else:
        why = None
    if why:
        refuse("level_model.columns", f"{level_file}'s feature_names=", why)
    if len(classes) != level["num_class"]:
        refuse("level_model.classes", f"{level_file}'s num_class=",
               f"names {len(classes)} classes, the model has {level['num_class']}")


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


__all__ = [
    "DIGEST_FIELD",
    "FORMAT",
    "LEVELS_FILE",
    "SCHEMA_VERSION",
    "ArtifactError",
    "ArtifactWarning",
    "RouterArtifact",
    "library_versions",
    "load_artifact",
    "manifest_digest",
    "save_artifact",
    "write_manifest",
]
