"""The ``ttsopt`` command."""

import typer

app = typer.Typer(help="ttsopt: compute-optimal test-time scaling, per problem.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the version."""
    from ttsopt import __version__

    typer.echo(__version__)
