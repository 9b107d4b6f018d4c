"""The Prefect side: a local server, deployments served from this process, builds, the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from wikifaces.core.errors import UserError

from .common import BadOption, Commands, RootOption, app, console, err

server_app = typer.Typer(help="A local Prefect server on SQLite, in the background (home: <root>/prefect).",
                          cls=Commands, no_args_is_help=True)
app.add_typer(server_app, name="server")


def _prefect_home(root: Path | None) -> Path:
    from wikifaces.core.paths import DataRoot

    return (DataRoot.resolve(root).root / "prefect").resolve()


@server_app.command("start")
def server_start(root: RootOption = None,
                 port: Annotated[int | None, typer.Option(help="Port on 127.0.0.1 (default 4200 if free).")] = None
                 ) -> None:
    """Start the server (or find the running one) and print the variable that points Prefect at it."""
    from flows.server import start_server, ui_url

    try:
        api = start_server(_prefect_home(root), port)
    except RuntimeError as e:  # the server would not start: what its log said
        raise UserError(str(e)) from None
    console.print(f"Prefect server: UI {ui_url(api)}; in every shell that talks to it:")
    console.print(f"  export PREFECT_API_URL={api}")


@server_app.command("stop")
def server_stop(root: RootOption = None) -> None:
    """Stop the server that `server start` (or the demo) started for this data root."""
    from flows.server import stop_server

    console.print("stopped" if stop_server(_prefect_home(root)) else "no server was running for this data root")


def _connect(root: Path | None) -> None:
    from flows.demo import connect
    from wikifaces.core.paths import DataRoot

    try:
        api = connect(DataRoot.resolve(root), console=err)
    except RuntimeError as e:  # the server would not start: what its log said
        raise UserError(str(e)) from None
    err.print(f"Prefect API: {api}")


@app.command()
def serve(
    root: RootOption = None,
    only: Annotated[list[str] | None, typer.Option(help="Serve only these flows (repeatable), e.g. train-dcgan.")]
    = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many runs at once.")] = None,
) -> None:
    """Serve deployments of every flow from this process until interrupted (`<flow>/default`, and
    `build-faces/demo` on the offline stand-in). Uses PREFECT_API_URL, else the local server."""
    _connect(root)
    from flows.deploy import serve_all

    serve_all(only, limit)


@app.command()
def build(
    root: RootOption = None,
    lsun: Annotated[Path | None, typer.Option(help="Build LSUN from this LMDB release or image folder "
                                                   "(build-lsun) instead of faces.")] = None,
    params: Annotated[str | None, typer.Option("--params", "-p", help="Flow parameters as JSON, as `prefect "
                                                                     "deployment run --params` takes them.")] = None,
    from_stage: Annotated[str | None, typer.Option("--from", help="Run from this stage on.")] = None,
    only: Annotated[list[str] | None, typer.Option(help="Run only this stage (repeatable).")] = None,
    force: Annotated[bool, typer.Option(help="Rerun the chosen stages even when unchanged.")] = False,
    standin: Annotated[bool, typer.Option(help="Scrape the offline stand-in instead of Wikipedia.")] = False,
    dask_address: Annotated[str | None, typer.Option(help="Send fan-out work to this Dask scheduler "
                                                          "(tcp://host:8786).")] = None,
) -> None:
    """Run build-faces (or build-lsun) in this process, reported to Prefect."""
    import json

    try:
        extra = json.loads(params) if params else {}
    except json.JSONDecodeError as e:
        raise BadOption(f"--params is not JSON: {e}") from None
    _connect(root)
    from flows.build import ParameterTypeError, build_faces, build_lsun

    common = {"root": str(root) if root else None, "from_stage": from_stage, "only": only, "force": force,
              "dask_address": dask_address}
    try:
        if lsun is not None:
            extra.setdefault("lsun", {})["source"] = str(lsun)
            results = build_lsun(**{**common, **extra})
        else:
            results = build_faces(**{**common, "standin": standin, **extra})
    except (ParameterTypeError, TypeError) as e:  # Prefect's check of the flow's parameters
        raise BadOption(str(e)) from None
    table = Table("stage", "what happened")
    for r in results:
        table.add_row(r["stage"], f"skipped: {r['reason']}" if r.get("skipped") else "ran")
    console.print(table)


@app.command()
def demo(
    root: RootOption = None,
    port: Annotated[int | None, typer.Option(help="Port for the local Prefect server.")] = None,
) -> None:
    """build-faces end to end on the offline defaults (local Prefect server, stand-in Wikipedia,
    short CPU training); says where the dataset, report and Prefect UI are."""
    from flows.demo import run_demo

    try:
        run_demo(root, console, port)
    except RuntimeError as e:  # the server would not start (another build holding the root is a UserError)
        raise UserError(str(e)) from None
