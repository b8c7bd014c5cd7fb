"""The ``ttsopt`` command: a Typer ``app`` whose commands live in one module per workflow.

- :mod:`.run`: ``models``, ``run`` (one strategy over a problem set), ``prm-eval``
- :mod:`.sweep`: ``sweep``, ``snapshot``
- :mod:`.selector`: ``train``, ``evaluate``
- :mod:`.online`: ``route``, ``solve``, ``serve``
- :mod:`.analysis`: ``explain``, ``report``
- :mod:`.quickstart`: ``quickstart``
- :mod:`.common`: the console, the one error-and-exit, progress bars, argument checks

Commands are thin: the logic lives in the library (train/, selector/, search/, serve/). Heavy
imports (torch, transformers, rich) happen inside commands, so ``ttsopt --help`` is instant.
"""

from __future__ import annotations

import os

import typer

from . import analysis, online, quickstart, run, selector, sweep

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    help="ttsopt: learn which test-time-scaling strategy is compute-optimal per problem, and route to it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the version."""
    from ttsopt import __version__

    typer.echo(__version__)


# in this order in `ttsopt --help`
app.command("models")(run.models)
app.command("run")(run.run)
app.command("sweep")(sweep.sweep)
app.command("snapshot")(sweep.snapshot)
app.command("prm-eval")(run.prm_eval)
app.command("train")(selector.train)
app.command("evaluate")(selector.evaluate)
app.command("route")(online.route)
app.command("solve")(online.solve)
app.command("serve")(online.serve)
app.command("explain")(analysis.explain)
app.command("report")(analysis.report)
app.command("quickstart")(quickstart.quickstart)


def main() -> None:  # pragma: no cover
    app()


__all__ = ["app", "main"]
