"""``ttsopt train`` end to end: the nested comparison that chooses each pair's deployed mode, then the
router fitted on every problem with that choice in its manifest. Here, above :mod:`.evaluate` and
:mod:`ttsopt.train.fit.build`, because the choice needs the one and the artifact the other."""

from __future__ import annotations

from typing import Any

from .deploy import manifest_record
def deployed_record(report: dict[str, Any], table: Any, options: Any) -> dict[str, Any]:
    """``manifest["deployed"]`` from the nested comparison's report, with how each pair's adaptive
    options stop (:func:`~ttsopt.train.fit.adaptive.stop_profile`, per level) for ``explain`` and the
    report; plain JSON (numpy scalars made floats)."""
    import json

    from ..fit.adaptive import stop_profile

    record = manifest_record(report)
    levels = dict(zip(table["problem_id"], table["level"].astype(str))) if "level" in table else None
    for pair, profile in stop_profile(options, levels).items():
        if pair in record:
            record[pair]["adaptive_stops"] = profile
    return json.loads(json.dumps(record, default=float))


def train_deployed(folders, out, settings, *, storage: str | None = None, progress=None, eval_progress=None,
                   gate_models: bool = False, device: str = "cpu", choose: bool = True) -> dict[str, Any]:
    """What ``ttsopt train`` runs: the nested comparison on the folders' problems (no probes, no
    leave-one-pair-out), then the router fitted on all of them with the winner as each pair's default
    (``manifest["deployed"]``); the comparison itself is kept as ``OUT/deployed-eval.json``.
    ``choose=False`` skips the comparison: the router then runs its argmax unless told otherwise."""
    import json
    from pathlib import Path

    from ttsopt.data.files import atomic_write_text

    from ..fit.build import train_router
    from ..fit.cascade import load_gates
    from ..fit.options import load_options
    from ..fit.table import load_training_table
    from .evaluate import evaluate, machine_info

    gates = load_gates(folders, score_models=gate_models, device=device)
    rest = load_options(folders)
    deployed = None
    if choose:
        table = load_training_table(folders, probe_k=settings.probe_k)
        report = evaluate(table, settings, progress=eval_progress, min_problems=settings.folds, lopo=False,
                          gates=gates, rest=rest)
        report["machine"] = machine_info()
        report["data"] = [str(f) for f in folders]
        deployed = deployed_record(report, table, rest)
        Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out) / "deployed-eval.json", json.dumps(report, indent=1, default=float) + "\n")
    return train_router(folders, out, settings, storage=storage, progress=progress, gate_models=gate_models,
                        device=device, gates=gates, rest=rest, deployed=deployed)


__all__ = ["deployed_record", "train_deployed"]
