"""The router artifact checks itself: its manifest's digest, and every feature list against the model files."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import router_fixtures as rf
from ttsopt.selector.artifact import (
    DIGEST_FIELD,
    ArtifactError,
    ArtifactWarning,
    load_artifact,
    manifest_digest,
    save_artifact,
    write_manifest,
)


@pytest.fixture
def art(tmp_path) -> Path:
    """A copy of the tiny router with a level model (both model files, categorical inputs)."""
    return Path(shutil.copytree(rf.tiny_artifact(probe=False, levels=True), tmp_path / "router"))


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _load_quietly(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ArtifactWarning)
        return load_artifact(path)


# --------------------------------------------------------------------------- the manifest's digest


def test_a_saved_manifest_carries_its_digest_and_loads_without_a_warning(art):
    m = _manifest(art)
    assert m[DIGEST_FIELD] == manifest_digest(m)
    assert {"pipeline", "pipeline.columns", "level_model.columns", "catalogue"} <= set(m[DIGEST_FIELD]["fields"])
    loaded = _load_quietly(art)
    assert loaded.levels is not None and loaded.pipeline.columns == m["pipeline"]["columns"]


def test_a_manifest_edited_after_training_is_refused_naming_the_file_and_the_field(art):
    m = _manifest(art)
    m["level_model"]["columns"].pop()  # the edit: one column fewer
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"manifest\.json: field level_model\.columns \(changed\) edited after"):
        load_artifact(art)
    m = _manifest(art)
    m["level_model"]["columns"] = _manifest(Path(rf.tiny_artifact(probe=False, levels=True)))["level_model"]["columns"]
    m["budgets"] = m["budgets"][:-1]
    m["extra"] = 1
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"fields budgets \(changed\), extra \(added\) edited"):
        load_artifact(art)
    del m["extra"], m["catalogue"]
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=r"budgets \(changed\), catalogue \(removed\)"):
        load_artifact(art)


def test_the_digest_is_of_the_content_not_of_its_formatting_and_the_digest_itself_is_checked(art):
    m = _manifest(art)
    reordered = dict(reversed(list(m.items())))
    (art / "manifest.json").write_text(json.dumps(reordered, indent=4))  # same content, other layout
    _load_quietly(art)
    m[DIGEST_FIELD]["content"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=f"{DIGEST_FIELD}.content was changed"):
        load_artifact(art)
    m[DIGEST_FIELD] = "not a digest"
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match=f"its {DIGEST_FIELD} is not a digest"):
        load_artifact(art)


def test_a_router_written_before_the_digest_still_loads_with_a_warning(art):
    m = _manifest(art)
    del m[DIGEST_FIELD]
    (art / "manifest.json").write_text(json.dumps(m, indent=1, sort_keys=True))
    with pytest.warns(ArtifactWarning, match=f"no {DIGEST_FIELD}"):
        loaded = load_artifact(art)
    assert loaded.levels is not None
    # ... and its feature lists are still checked against the model files
    m["level_model"]["columns"].pop()
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.warns(ArtifactWarning), pytest.raises(ArtifactError, match="level_model.columns does not match"):
        load_artifact(art)


def test_write_manifest_reseals_a_deliberate_edit(art):
    m = _manifest(art)
    m["name"] = "renamed"
    write_manifest(art, m)
    assert _load_quietly(art).manifest["name"] == "renamed"


# --------------------------------------------------------------------------- every feature list


def _resealed(art: Path, edit) -> Path:
    """The manifest edited by ``edit`` and sealed again: only the feature lists' checks can refuse it."""
    m = _manifest(art)
    edit(m)
    write_manifest(art, m)
    return art


def test_pipeline_columns_are_the_models_feature_names(art):
    _resealed(art, lambda m: m["pipeline"]["columns"].remove("txt_words"))
    with pytest.raises(ArtifactError, match=r"manifest\.json: pipeline\.columns does not match model\.txt's "
                                            r"feature_names=: it lacks \['txt_words'\]"):
        load_artifact(art)


def test_pipeline_columns_in_another_order_are_refused(art):
    def swap(m):
        c = m["pipeline"]["columns"]
        c[0], c[1] = c[1], c[0]
    _resealed(art, swap)
    with pytest.raises(ArtifactError, match="pipeline.columns does not match.*another order"):
        load_artifact(art)


def test_pipeline_categorical_is_the_models_categorical_features(art):
    _resealed(art, lambda m: m["pipeline"]["categorical"].remove("strategy_vote"))
    with pytest.raises(ArtifactError, match=r"pipeline\.categorical does not match model\.txt's categorical_feature: "
                                            r"it lacks \['strategy_vote'\]"):
        load_artifact(art)


def test_pipeline_categories_name_the_models_categorical_features(art):
    _resealed(art, lambda m: m["pipeline"]["categories"].pop("strategy_agg"))
    with pytest.raises(ArtifactError, match=r"pipeline\.categories does not match .*lacks \['strategy_agg'\]"):
        load_artifact(art)


def test_each_categorys_values_are_the_models_pandas_categorical(art):
    _resealed(art, lambda m: m["pipeline"]["categories"]["strategy_method"].reverse())  # codes would shift
    with pytest.raises(ArtifactError, match=r"pipeline\.categories\.strategy_method does not match model\.txt's "
                                            "pandas_categorical: it has the same names in another order"):
        load_artifact(art)


def test_level_model_columns_are_the_level_models_features(art):
    dropped = []
    _resealed(art, lambda m: dropped.append(m["level_model"]["columns"].pop()))
    # the level model is fitted with its columns' names, so the check names the one that went missing
    with pytest.raises(ArtifactError, match=r"level_model\.columns does not match levels\.txt's feature_names=: "
                                            rf"it lacks \['{dropped[0]}'\]"):
        load_artifact(art)


def test_level_model_columns_are_columns_of_the_pipeline(art):
    _resealed(art, lambda m: m["level_model"]["columns"].__setitem__(0, "probe_agreement"))
    with pytest.raises(ArtifactError, match=r"level_model\.columns does not match pipeline\.columns: it has "
                                            r"\['probe_agreement'\]"):
        load_artifact(art)


def test_level_model_classes_are_the_level_models_classes(art):
    _resealed(art, lambda m: m["level_model"]["classes"].pop())
    with pytest.raises(ArtifactError, match=r"level_model\.classes does not match levels\.txt's num_class=: it names "
                                            "1 classes, the model has 2"):
        load_artifact(art)


def test_a_level_model_with_feature_names_is_checked_by_name(tmp_path):
    """A level model fitted with its columns' names (not LightGBM's Column_i) is checked name by name:
    the same count in another order is refused too."""
    import lightgbm as lgb
    from ttsopt.selector.levels import LEVEL_PARAMS, LevelModel

    source = load_artifact(rf.tiny_artifact(probe=False, levels=True))
    cols = source.levels.columns[:4]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 4)), rng.integers(0, 2, 60)
    booster = lgb.train({**LEVEL_PARAMS, "num_class": 2}, lgb.Dataset(x, label=y, feature_name=list(cols)), 5)
    manifest = {k: v for k, v in source.manifest.items()
                if k not in ("format", "schema_version", "model_file", "model_sha256", "level_model", "pipeline",
                             "versions", DIGEST_FIELD)}
    out = save_artifact(tmp_path / "named", source.booster, source.pipeline, manifest,
                        levels=LevelModel(booster, ["1", "2"], list(cols)))
    assert _load_quietly(out).levels.columns == list(cols)

    def swap(m):
        c = m["level_model"]["columns"]
        c[0], c[1] = c[1], c[0]
    _resealed(out, swap)
    with pytest.raises(ArtifactError, match="level_model.columns does not match levels.txt's feature_names=: it has "
                                            "the same names in another order"):
        load_artifact(out)


def test_the_router_refuses_an_edited_manifest_as_a_router_error(art):
    from ttsopt.selector.router import Router, RouterError

    m = _manifest(art)
    m["level_model"]["columns"].pop()
    (art / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RouterError, match="level_model.columns"):
        Router.load(art, policy=rf.ScriptedPolicy(), encoder=rf.fake_encoder)
