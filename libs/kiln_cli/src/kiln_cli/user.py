"""The user's commands, on top of :mod:`kiln_client`: ``kiln dataset``, ``kiln train``,
``kiln job``, ``kiln model``, ``kiln predict``. They talk to the gateway at ``KILN_URL`` as
``KILN_TOKEN``; ``--json`` prints one JSON document for scripts; any failure prints one line
on stderr and exits non-zero."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
from tqdm.auto import tqdm

from kiln_client import ApiError, Kiln, KilnClientError, Progress

P = ParamSpec("P")
T = TypeVar("T")

JsonOption = typer.Option(False, "--json", help="print one JSON document (for scripts)")

dataset_app = typer.Typer(
    help="Datasets: create, upload, import, export, versions.", no_args_is_help=True
)
train_app = typer.Typer(help="Training runs: submit (and watch).", no_args_is_help=True)
job_app = typer.Typer(help="A training job: show, pause, resume, cancel.", no_args_is_help=True)
model_app = typer.Typer(help="The model registry: list, promote, download.", no_args_is_help=True)


def fail(message: str) -> typer.Exit:
    typer.echo(f"kiln: error: {message}", err=True)
    return typer.Exit(1)


def reason(exc: Exception) -> str:
    """One line saying what went wrong."""
    if isinstance(exc, ApiError):
        return f"{exc.status} {exc.title}: {exc.detail}".replace("\n", " ")[:500]
    return str(exc).replace("\n", " ")[:500]


def user_command(fn: Callable[P, T]) -> Callable[P, T]:
    """Turn the client's errors (and a bad local path) into one line and exit status 1."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (KilnClientError, httpx.HTTPError, OSError, ValueError) as exc:
            raise fail(reason(exc)) from None

    return run


@contextmanager
def client() -> Iterator[Kiln]:
    with Kiln() as kiln:  # KILN_URL, KILN_TOKEN
        yield kiln


def emit(value: Any, as_json: bool, text: str | Callable[[], str]) -> None:
    if as_json:
        typer.echo(json.dumps(value, default=str))
    else:
        typer.echo(text() if callable(text) else text)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [
        [str(row.get(c, "") if row.get(c) is not None else "-") for c in columns] for row in rows
    ]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


# --- datasets ------------------------------------------------------------------------------------


@dataset_app.command("create")
@user_command
def dataset_create(
    name: str,
    task_type: str = typer.Option("classification", help="classification, detection, …"),
    description: str = typer.Option("", help="what the data is"),
    as_json: bool = JsonOption,
) -> None:
    """Create a dataset; prints its id."""
    with client() as kiln:
        ds = kiln.datasets.create(name, task_type, description)
    emit(ds, as_json, f"{ds['id']}  {ds.get('name')}")


@dataset_app.command("upload")
@user_command
def dataset_upload(
    dataset_id: str,
    folder: Path = typer.Argument(..., help="a folder of images"),
    labels_from_folders: bool = typer.Option(
        False, help="an image's parent folder names its class"
    ),
    split: str = typer.Option("", help="train, val or test for every image"),
    message: str = typer.Option("", help="the new version's message"),
    as_json: bool = JsonOption,
) -> None:
    """Upload a folder of images as a new version (images Kiln already has are not sent)."""
    if split and split not in ("train", "val", "test"):
        raise fail(f"--split must be train, val or test, not {split!r}")
    with client() as kiln:
        report = kiln.datasets.upload_folder(
            dataset_id,
            folder,
            labels_from_folders=labels_from_folders,
            split=split or None,  # type: ignore[arg-type]
            message=message,
            progress=not as_json,
        )
    emit(
        report,
        as_json,
        lambda: (
            f"version {report['version']['version']}: {report['files']} files, "
            f"{report['sent']} sent, {report['skipped']} already stored, "
            f"{len(report['rejected'])} rejected"
            + "".join(f"\n  rejected {r['file']}: {r['reason']}" for r in report["rejected"])
        ),
    )


@dataset_app.command("import")
@user_command
def dataset_import(
    dataset_id: str,
    archive: Path = typer.Argument(..., help="a zip or tar.gz archive"),
    format: str = typer.Option("auto", help="coco, yolo, voc, imagefolder, csv, jsonl or auto"),
    mode: str = typer.Option("append", help="append to the latest version, or replace it"),
    as_json: bool = JsonOption,
) -> None:
    """Import an archive and follow its job to the end."""
    if not archive.is_file():
        raise fail(f"{archive}: no such file")
    with client() as kiln:
        job = kiln.datasets.import_archive(dataset_id, archive, format, mode=mode)
    result = job.get("result") or {}
    emit(job, as_json, f"imported: version {result.get('version', '?')} ({job.get('message', '')})")


@dataset_app.command("export")
@user_command
def dataset_export(
    dataset_id: str,
    version: int,
    out: Path = typer.Argument(..., help="the file to write"),
    format: str = typer.Option("jsonl", help="jsonl, coco, yolo, voc or imagefolder"),
    as_json: bool = JsonOption,
) -> None:
    """Export a version to a file."""
    with client() as kiln:
        path = kiln.datasets.export(dataset_id, version, out, format, progress=not as_json)
    size = path.stat().st_size
    emit({"path": str(path), "bytes": size}, as_json, f"wrote {path} ({size} bytes)")


@dataset_app.command("versions")
@user_command
def dataset_versions(dataset_id: str, as_json: bool = JsonOption) -> None:
    """A dataset's versions."""
    with client() as kiln:
        versions = kiln.datasets.versions(dataset_id)
    rows = [{**v, "source": (v.get("lineage") or {}).get("source")} for v in versions]
    emit(
        versions,
        as_json,
        lambda: table(rows, ["version", "item_count", "labelled_count", "source", "message"]),
    )


# --- training ------------------------------------------------------------------------------------


def parse_params(values: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values read as JSON when they are (numbers, true, lists)."""
    out: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param wants key=value, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def watch_job(kiln: Kiln, job_id: str, total_epochs: int | None, quiet: bool) -> None:
    """A live progress bar over epochs with the latest metrics beside it."""
    with tqdm(total=total_epochs, unit="epoch", desc=job_id[:12], disable=quiet) as bar:
        for event in kiln.training.watch(job_id):
            if isinstance(event, Progress):
                if event.epoch > bar.n:
                    bar.update(event.epoch - bar.n)
                bar.set_postfix(
                    {k: f"{v:.4g}" for k, v in list(event.metrics.items())[:4]}, refresh=True
                )
            else:
                bar.set_description(f"{job_id[:12]} {event.status}")
                if event.status == "succeeded" and bar.total and bar.n < bar.total:
                    bar.update(bar.total - bar.n)  # a run's last epoch ends with its success


def evaluation_summary(job: dict[str, Any], evaluation: dict[str, Any]) -> str:
    figures = {
        k: v
        for k, v in evaluation.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    lines = [f"job {job['id']} {job.get('status')}"]
    lines += [
        f"  {k:<16} {v:.4f}" if isinstance(v, float) else f"  {k:<16} {v}"
        for k, v in figures.items()
    ]
    return "\n".join(lines)


@train_app.command("submit")
@user_command
def train_submit(
    dataset_id: str,
    template: str = typer.Option(..., help="a training template (GET /v1/templates)"),
    team: str = typer.Option("default", help="the scheduling team (created if missing)"),
    version: int = typer.Option(None, help="dataset version (default: the latest)"),
    param: list[str] = typer.Option([], "--param", "-p", help="hyperparameter key=value"),
    model_name: str = typer.Option("", help="the registered model to produce"),
    seed: int = typer.Option(0, help="random seed"),
    watch: bool = typer.Option(False, "--watch", help="follow the run to its end"),
    as_json: bool = JsonOption,
) -> None:
    """Submit a training run; with --watch show its progress and end with its evaluation."""
    params = parse_params(param)
    with client() as kiln:
        kiln.training.ensure_team(team)
        job = kiln.training.submit(
            template,
            dataset_id,
            team=team,
            version=version,
            params=params,
            model_name=model_name or None,
            seed=seed,
        )
        if not watch:
            emit(job, as_json, f"submitted {job['id']} ({job.get('status')})")
            return
        job_params: dict[str, Any] = dict(job.get("params") or {})
        epochs = params.get("epochs") or job_params.get("epochs")
        watch_job(kiln, job["id"], int(epochs) if epochs else None, quiet=as_json)
        final: dict[str, Any] = dict(kiln.training.get(job["id"]))
        evaluation: dict[str, Any] = {}
        if final.get("status") == "succeeded":
            evaluation = kiln.training.evaluation(job["id"])
    emit(
        {"job": final, "evaluation": evaluation},
        as_json,
        lambda: evaluation_summary(final, evaluation),
    )
    if final.get("status") != "succeeded":
        error = final.get("error") or {}
        raise fail(f"job {job['id']} {final.get('status')}: {error.get('detail', '')}")


def job_line(job: dict[str, Any]) -> str:
    metrics = ", ".join(f"{k} {v:.4g}" for k, v in (job.get("metrics") or {}).items())
    return (
        f"{job['id']}  {job.get('status')}  {job.get('template')}  epoch {job.get('epoch', 0)}"
        f"  step {job.get('step', 0)}" + (f"  {metrics}" if metrics else "")
    )


def job_command(name: str, act: Callable[[Kiln, str], Any], doc: str) -> None:
    @job_app.command(name, help=doc)
    @user_command
    def command(job_id: str, as_json: bool = JsonOption) -> None:
        with client() as kiln:
            job = act(kiln, job_id)
        emit(job, as_json, lambda: job_line(job))


job_command("show", lambda k, j: k.training.get(j), "A training job's state and latest metrics.")
job_command("pause", lambda k, j: k.training.pause(j), "Pause a training job (it checkpoints).")
job_command("resume", lambda k, j: k.training.resume(j), "Resume a paused training job.")
job_command("cancel", lambda k, j: k.training.cancel(j), "Cancel a training job.")


# --- registry ------------------------------------------------------------------------------------


@model_app.command("list")
@user_command
def model_list(
    name: str = typer.Argument("", help="a model: list its versions instead"),
    as_json: bool = JsonOption,
) -> None:
    """Registered models, or one model's versions."""
    with client() as kiln:
        if name:
            versions = kiln.registry.versions(name)
            if not versions:
                kiln.registry.model(name)  # a missing model says so (404)
            rows = [
                {
                    **v,
                    "accuracy": (v.get("metrics") or {}).get("accuracy"),
                    "aliases": ",".join(v.get("aliases") or []),
                }
                for v in versions
            ]
            emit(
                versions, as_json, lambda: table(rows, ["version", "status", "accuracy", "aliases"])
            )
            return
        models = kiln.registry.models()
    emit(
        models,
        as_json,
        lambda: table([dict(m) for m in models], ["name", "latest_version", "description"]),
    )


@model_app.command("promote")
@user_command
def model_promote(
    name: str,
    version: int,
    alias: str = typer.Argument("production", help="production, canary, staging, …"),
    reason_: str = typer.Option("", "--reason", help="recorded in the audit log"),
    as_json: bool = JsonOption,
) -> None:
    """Point an alias at a version (the model's gates apply)."""
    with client() as kiln:
        promoted = kiln.registry.promote(name, version, alias, reason_)
    emit(promoted, as_json, f"{name} {alias} → v{version}")


@model_app.command("download")
@user_command
def model_download(
    name: str,
    version: int,
    to: Path = typer.Option(Path("."), help="a file, or a folder for <name>-v<n>.pt"),
    as_json: bool = JsonOption,
) -> None:
    """Download a version's TorchScript file."""
    with client() as kiln:
        path = kiln.registry.download(name, version, to)
    size = path.stat().st_size
    emit({"path": str(path), "bytes": size}, as_json, f"wrote {path} ({size} bytes)")


# --- serving -------------------------------------------------------------------------------------


@user_command
def predict(
    endpoint: str,
    files: list[Path] = typer.Argument(..., help="input images"),
    probabilities: bool = typer.Option(False, help="every class's probability too"),
    as_json: bool = JsonOption,
) -> None:
    """Predict each file with an endpoint's model."""
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise fail(f"no such file: {', '.join(missing)}")
    answers: list[dict[str, Any]] = []
    with client() as kiln:
        for path in files:
            answer = kiln.serving.predict(endpoint, path, probabilities=probabilities)
            answers.append({"file": str(path), **answer})

    def text() -> str:
        lines = []
        for a in answers:
            top = (a.get("predictions") or [{}])[0]
            confidence = float(top.get("confidence") or 0)
            line = f"{a['file']}  {top.get('label')}  {confidence:.3f}  v{a.get('version')}"
            if probabilities and top.get("probabilities"):
                line += "  " + json.dumps(top["probabilities"])
            lines.append(line)
        return "\n".join(lines)

    emit(answers, as_json, text)


def add_user_commands(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(train_app, name="train")
    app.add_typer(job_app, name="job")
    app.add_typer(model_app, name="model")
    app.command("predict")(predict)
