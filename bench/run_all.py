"""Run every benchmark under ``bench/`` and write ``docs/benchmarks.md``.

Each benchmark runs as its own subprocess (as a person would run it) and prints one JSON
object on its last line; this collects those objects and writes, per benchmark, a table of
its figures beside the baseline measured in the same run and the issue's target, with pass or
miss, plus the machine it ran on (CPU, cores, memory, OS, Python, PyTorch, load) and the date.
Raw results go to ``docs/benchmarks.json``; with ``--only`` the other benchmarks' earlier
results are kept from there, each with its own date.

    .venv/bin/python bench/run_all.py [--quick] [--only soak,serving] [--note "…"]
    .venv/bin/python bench/run_all.py --render-only --note "…"   # report from the raw results
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RAW = REPO / "docs" / "benchmarks.json"


@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=", "<", "==" against ``value``
    value: Any

    def met(self, figure: Any) -> bool:
        checks: dict[str, Callable[[Any, Any], bool]] = {
            ">=": lambda a, b: a >= b,
            "<=": lambda a, b: a <= b,
            "<": lambda a, b: a < b,
            "==": lambda a, b: a == b,
        }
        return bool(checks[self.op](figure, self.value))

    def __str__(self) -> str:
        value = str(self.value).lower() if isinstance(self.value, bool) else self.value
        return f"{self.op.replace('<=', '≤').replace('>=', '≥')} {value}"


@dataclass(frozen=True)
class Figure:
    """One row: a key of the benchmark's JSON, the key of its baseline (if any), the target."""

    label: str
    key: str
    unit: str = ""
    baseline: str | None = None
    baseline_label: str = ""
    target: Target | None = None


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: str
    about: str
    figures: list[Figure]
    full: list[str] = field(default_factory=list)
    quick: list[str] = field(default_factory=list)
    timeout_s: float = 1800
    # Peers it runs beside Kiln: (name, key of the version in its JSON, how it is set up).
    peers: list[tuple[str, str, str]] = field(default_factory=list)


BENCHMARKS = [
    Benchmark(
        "ingest",
        "ingest.py",
        "Upload API (a `kiln serve dataset` process on PostgreSQL + MinIO + Kafka, multipart "
        "over loopback) against raw MinIO puts of the same files at the same concurrency; then "
        "the training-data loader (see loader).",
        [
            Figure(
                "upload throughput",
                "upload_images_per_s",
                "images/s",
                "raw_put_images_per_s",
                "raw MinIO puts",
            ),
            Figure("upload ratio", "upload_ratio", "", target=Target(">=", 0.7)),
            Figure(
                "loader throughput (warm)",
                "loader_images_per_s",
                "images/s",
                "local_images_per_s",
                "plain torch Dataset on local files",
            ),
            Figure("loader ratio", "loader_ratio", "", target=Target(">=", 0.8)),
        ],
        quick=["--images", "200"],
    ),
    Benchmark(
        "loader",
        "loader.py",
        "kiln_data's VersionDataset + DataLoader from MinIO (blob cache warm) against a plain "
        "torch Dataset reading the same files from local disk, same DataLoader settings.",
        [
            Figure(
                "loader throughput (warm)",
                "loader_images_per_s",
                "images/s",
                "local_images_per_s",
                "plain torch Dataset on local files",
            ),
            Figure("loader ratio", "loader_ratio", "", target=Target(">=", 0.8)),
            Figure("loader throughput (cold cache)", "loader_cold_images_per_s", "images/s"),
        ],
        quick=["--images", "200", "--repeats", "1"],
    ),
    Benchmark(
        "event_latency",
        "event_latency.py",
        "Outbox commit → handler completion: writer and consumer as separate processes on "
        "Kafka + PostgreSQL, against bare Kafka produce → consume with no database.",
        [
            Figure(
                "p99 latency, Kafka + PostgreSQL",
                "kafka_p99_ms",
                "ms",
                "bare_kafka_p99_ms",
                "bare Kafka",
                Target("<=", 15),
            ),
            Figure(
                "p50 latency, Kafka + PostgreSQL",
                "kafka_p50_ms",
                "ms",
                "bare_kafka_p50_ms",
                "bare Kafka",
            ),
            Figure("p99 latency, embedded bus + SQLite", "embedded_p99_ms", "ms"),
            Figure("events/s delivered, Kafka", "kafka_events_per_s", "events/s"),
        ],
        quick=["--events", "300"],
    ),
    Benchmark(
        "training",
        "training.py",
        "A platform job (API → scheduler → Celery worker → data, training, evaluation, export, "
        "checkpoints) against a plain PyTorch loop over the same data, template, seed and "
        "epochs; and one scheduling decision over 10,000 queued jobs of 50 teams.",
        [
            Figure(
                "job run time",
                "platform_run_s",
                "s",
                "plain_loop_s",
                "plain PyTorch loop",
            ),
            Figure("overhead ratio", "overhead_ratio", "", target=Target("<=", 1.05)),
            Figure("submit → first step", "submit_to_first_step_s", "s", target=Target("<", 0.5)),
            Figure("schedule decision (10,000 queued)", "schedule_decision_ms", "ms"),
        ],
        quick=["--images", "500", "--epochs", "2"],
    ),
    Benchmark(
        "serving",
        "serving.py",
        "`:predict` and `/v2/models/…/infer` over HTTP to `kiln serve serving` against "
        "tritonclient calling Triton directly on the same loaded model; promotion event → first "
        "answer from the new version.",
        [
            Figure("p50 latency", "kiln_p50_ms", "ms", "direct_p50_ms", "Triton direct"),
            Figure("p50 overhead", "p50_overhead_ms", "ms", target=Target("<=", 0.5)),
            Figure("p99 latency", "kiln_p99_ms", "ms", "direct_p99_ms", "Triton direct"),
            Figure("throughput", "kiln_rps", "req/s", "direct_rps", "Triton direct"),
            Figure("throughput ratio", "throughput_ratio", "", target=Target(">=", 0.95)),
            Figure("v2 infer p50 latency", "oip_p50_ms", "ms", "direct_p50_ms", "Triton direct"),
            Figure("v2 infer p50 overhead", "oip_p50_overhead_ms", "ms"),
            Figure("v2 infer throughput", "oip_rps", "req/s", "direct_rps", "Triton direct"),
            Figure("v2 infer throughput ratio", "oip_throughput_ratio", ""),
            Figure("promotion → serving", "promote_to_serve_s", "s", target=Target("<", 1.5)),
            Figure("KServe p50 latency", "kserve_p50_ms", "ms", "kiln_p50_ms", "Kiln :predict"),
            Figure("KServe throughput", "kserve_throughput", "req/s", "kiln_rps", "Kiln :predict"),
            Figure("Kiln / KServe throughput", "kserve_ratio", "", target=Target(">=", 1.5)),
        ],
        quick=["--requests", "300", "--seconds", "3"],
        peers=[
            (
                "KServe",
                "kserve_version",
                "`kserve` from PyPI in its own environment (`tools/install_peer_kserve.sh`, "
                "~/.cache/kiln/peers/kserve-<version>). `bench/kserve_transformer.py` is a "
                "KServe `Model` run by KServe's `ModelServer` with its defaults (one uvicorn "
                'worker, REST only): `preprocess` turns `{"instances": [[…]]}` into a v2 '
                "`InferRequest`, KServe's own predictor client sends it to the same Triton "
                "model over v2 gRPC (`--predictor_protocol grpc-v2`), `postprocess` maps "
                "`probabilities` to labels — what Kiln's `:predict` does. Asked "
                "`POST /v1/models/<name>:predict` with one row, by the same aiohttp client at "
                "the same concurrency, in rounds alternating with Kiln's.",
            )
        ],
    ),
    Benchmark(
        "annotation",
        "annotation.py",
        "50 simulated annotators, each taking the next task of a project and submitting a "
        "classification label until the queue is empty: on Kiln's dataset and annotation "
        "services as `kiln up` runs them (API + event process each, PostgreSQL, Kafka, "
        "MinIO), then on Label Studio's REST API; the same number of one-image tasks, the same "
        "client (aiohttp) and machine.",
        [
            Figure("tasks per second", "tasks_per_s", "tasks/s", "ls_tasks_per_s", "Label Studio"),
            Figure(
                "Kiln / Label Studio tasks per second",
                "annotation_ratio",
                "",
                target=Target(">=", 3),
            ),
            Figure(
                "lease p99",
                "lease_p99_ms",
                "ms",
                "ls_next_p99_ms",
                "Label Studio next task",
                Target("<=", 20),
            ),
            Figure("lease p50", "lease_p50_ms", "ms", "ls_next_p50_ms", "Label Studio next task"),
            Figure(
                "submit p99", "submit_p99_ms", "ms", "ls_submit_p99_ms", "Label Studio annotation"
            ),
        ],
        quick=["--tasks", "200"],
        peers=[
            (
                "Label Studio",
                "label_studio_version",
                "`label-studio` from PyPI with `psycopg2-binary` and `uwsgi` in its own "
                "environment (`tools/install_peer_labelstudio.sh`). Its database is "
                "`kiln_peer_label_studio` on the same PostgreSQL (`DJANGO_DB=default`, "
                "migrated by `manage.py migrate`); served the way its production image does "
                "(`deploy/uwsgi.ini`): uWSGI, master, 4 processes, single interpreter, "
                "`DEBUG` off, HTTP keep-alive on (nginx would keep client connections open), "
                "Sentry off. One organisation with legacy API tokens, one user per annotator. "
                "A project with one `Choices` control over an `Image`, "
                "`maximum_annotations=1`, the tasks imported in one `POST …/import`; each "
                "annotator loops `GET /api/projects/{id}/next` + `POST "
                "/api/tasks/{id}/annotations`.",
            )
        ],
    ),
    Benchmark(
        "registry",
        "registry.py",
        "16 concurrent clients, each looping: register a new version of a model from an "
        "artifact already in the store, point an alias of its own at it, resolve the alias; "
        "Kiln's registry service (API + event process, PostgreSQL, MinIO, Kafka) against "
        "`mlflow server`; every call counts as one operation.",
        [
            Figure(
                "operations per second",
                "registry_ops_per_s",
                "ops/s",
                "mlflow_ops_per_s",
                "MLflow",
            ),
            Figure(
                "Kiln / MLflow operations per second", "registry_ratio", "", target=Target(">=", 2)
            ),
            Figure("p50 per operation", "registry_p50_ms", "ms", "mlflow_p50_ms", "MLflow"),
            Figure("p99 per operation", "registry_p99_ms", "ms", "mlflow_p99_ms", "MLflow"),
            Figure(
                "register p99", "registry_register_p99_ms", "ms", "mlflow_register_p99_ms", "MLflow"
            ),
            Figure("alias p99", "registry_alias_p99_ms", "ms", "mlflow_alias_p99_ms", "MLflow"),
            Figure(
                "resolve p99", "registry_resolve_p99_ms", "ms", "mlflow_resolve_p99_ms", "MLflow"
            ),
        ],
        quick=["--seconds", "8"],
        peers=[
            (
                "MLflow",
                "mlflow_version",
                "`mlflow` from PyPI with `psycopg2-binary` and `boto3` in its own environment "
                "(`tools/install_peer_mlflow.sh`). `mlflow server --backend-store-uri "
                "postgresql+psycopg2://…/kiln_peer_mlflow` (its own database on the same "
                "PostgreSQL) `--artifacts-destination s3://kiln-peer-mlflow/artifacts` (the "
                "same MinIO, `MLFLOW_S3_ENDPOINT_URL`), otherwise its defaults (uvicorn and "
                "its default workers). The model file is put once in its bucket; each loop is "
                "`POST model-versions/create` with that `source`, `POST "
                "registered-models/alias`, `GET registered-models/alias`. Kiln's side sends the "
                "same TorchScript file to `POST /v1/models/{name}/versions` (content-addressed: "
                "the bytes are already stored), then `POST …/aliases/c<i>` and `GET …/aliases`.",
            )
        ],
    ),
    Benchmark(
        "scale",
        "scale.py",
        "How Kiln's costs grow with its data: at each size, a version commit, a draft based on "
        "the version, committing that draft, stats, diff, COCO export, annotation task "
        "creation for the version, one lease with that many tasks waiting, one scheduling "
        "decision with that many queued jobs, the relay publishing that many outbox rows. "
        "In-process services on the embedded store (SQLite + local files); growth exponent = "
        "slope of log(time) on log(size).",
        [
            Figure("largest growth exponent", "max_exponent", "", target=Target("<=", 1.1)),
            Figure("lease growth exponent", "lease_exponent", "", target=Target("<=", 0.2)),
        ],
        quick=["--sizes", "1000,10000"],
        timeout_s=5400,
    ),
    Benchmark(
        "soak",
        "soak.py",
        "The local stack as real processes (API, event and worker processes per service, the "
        "gateway) under mixed load: uploads + commits, annotation leases + submissions, small "
        "training jobs, predictions. Memory: PSS of each process with its children.",
        [
            Figure("errors", "errors", "", target=Target("==", 0)),
            Figure("error rate", "error_rate", ""),
            Figure("requests in the window", "requests", ""),
            Figure("memory levelled off", "memory_levelled", "", target=Target("==", True)),
            Figure("window", "window_s", "s"),
        ],
        full=["--duration", "600"],
        quick=["--quick"],
        timeout_s=3600,
    ),
]


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# --- the machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    except OSError:
        pass

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": os_name,
        "python": platform.python_version(),
        "torch": version("torch"),
        "commit": commit,
    }


# --- running -------------------------------------------------------------------------------------


def run_one(bench: Benchmark, quick: bool, log_dir: Path) -> dict[str, Any]:
    """Run one benchmark; its last-line JSON with when, how long and under what load."""
    args = bench.quick if quick else bench.full
    argv = [sys.executable, str(REPO / "bench" / bench.script), *args]
    log_path = log_dir / f"{bench.name}.log"
    log(f"{bench.name}: {' '.join(argv[1:])} (log {log_path})")
    started = time.monotonic()
    entry: dict[str, Any] = {
        "run_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "args": args,
        "quick": quick,
        "load_before": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }
    try:
        with log_path.open("w") as errors:
            proc = subprocess.run(
                argv,
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
                timeout=bench.timeout_s,
            )
        lines = proc.stdout.strip().splitlines()
        figures = json.loads(lines[-1]) if lines else None
        if not isinstance(figures, dict):
            raise ValueError("no JSON object on the last line")
        entry["figures"] = figures
        if proc.returncode != 0:
            entry["error"] = f"exit code {proc.returncode}"
    except (subprocess.TimeoutExpired, ValueError) as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        entry["log_tail"] = tail
    entry["seconds"] = round(time.monotonic() - started, 1)
    entry["load_after"] = round(os.getloadavg()[0], 2)
    outcome = entry.get("error") or "done"
    log(f"{bench.name}: {outcome} in {entry['seconds']:.0f}s")
    return entry


# --- the report ----------------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def figure_rows(bench: Benchmark, figures: dict[str, Any]) -> list[str]:
    rows = [
        "| figure | measured | baseline (same run) | target | |",
        "|---|---|---|---|---|",
    ]
    for f in bench.figures:
        value = figures.get(f.key)
        baseline = (
            f"{fmt(figures.get(f.baseline), f.unit)} ({f.baseline_label})" if f.baseline else ""
        )
        verdict = ""
        if f.target is not None:
            verdict = "—" if value is None else ("pass" if f.target.met(value) else "**miss**")
        target = f"{f.target} {f.unit}".strip() if f.target else "reported"
        rows.append(f"| {f.label} | {fmt(value, f.unit)} | {baseline} | {target} | {verdict} |")
    return rows


def soak_rows(figures: dict[str, Any]) -> list[str]:
    out = ["", "Operations in the measured window (through the gateway):", ""]
    out += ["| operation | count | errors | p50 | p99 | max |", "|---|---|---|---|---|---|"]
    for op, o in figures.get("operations", {}).items():
        out.append(
            f"| {op} | {o['count']} | {o['errors']} | {fmt(o.get('p50_ms'), 'ms')} | "
            f"{fmt(o.get('p99_ms'), 'ms')} | {fmt(o.get('max_ms'), 'ms')} |"
        )
    work = (
        f"{figures.get('items_uploaded', 0)} images uploaded in "
        f"{figures.get('upload_versions', 0)} versions, "
        f"{figures.get('labelled_versions', 0)} of them labelled back into the dataset "
        f"({figures.get('tasks_submitted', 0)} annotation tasks), "
        f"{figures.get('training_jobs_succeeded', 0)}/{figures.get('training_jobs', 0)} "
        f"training jobs succeeded ({figures.get('model_versions_registered', 0)} model versions "
        f"registered), {figures.get('predictions', 0)} predictions; warm-up "
        f"{fmt(figures.get('warmup_s'), 's')} before the window."
    )
    out += ["", work, ""]
    out.append(f"Memory criterion: {figures.get('memory_criterion', '')}.")
    times = figures.get("timeline_s", [])
    out += [
        "",
        "Memory per process (MiB, PSS with children): first/last/max in the window; peak of "
        "its first two thirds against peak of its last third; median of its middle third "
        "against median of its last third; slope over its second half; then the whole run "
        f"(warm-up included) at t = {', '.join(f'{t:.0f}' for t in times)} s.",
        "",
        "| process | first | last | max | peak ⅔ → last ⅓ | median mid ⅓ → last ⅓ "
        "| slope MiB/min | levelled | over time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in figures.get("memory", {}).items():
        if "first_mib" not in m:
            out.append(f"| {name} | | | | | | | no ({m.get('reason')}) | |")
            continue
        series = " ".join(f"{v:.0f}" for v in m.get("timeline_mib", []))
        levelled = "yes" if m["levelled"] else "**no**"
        if name == "driver":
            levelled += " (load driver, not judged)"
        out.append(
            f"| {name} | {m['first_mib']:.0f} | {m['last_mib']:.0f} | {m['max_mib']:.0f} | "
            f"{m['earlier_max_mib']:.0f} → {m['last_third_max_mib']:.0f} | "
            f"{m['middle_third_median_mib']:.0f} → {m['last_third_median_mib']:.0f} | "
            f"{m['slope_mib_per_min']:+.1f} | {levelled} | {series} |"
        )
    if figures.get("error_examples"):
        out += ["", "Errors seen:", ""]
        out += [f"- `{e}`" for e in figures["error_examples"]]
    return out


SCALE_OPS = {
    "commit": "version commit",
    "draft": "draft based on the version",
    "draft_commit": "commit of that draft",
    "stats": "stats",
    "diff": "diff of two versions",
    "export": "COCO export",
    "tasks": "annotation tasks for the version",
    "lease": "one lease (p50), that many tasks waiting",
    "schedule": "scheduling decision, that many queued jobs",
    "relay": "relay publishing that many outbox rows",
}


def exponent_target(op: str) -> Target:
    """Every operation at most linear; a lease near constant (issue #24)."""
    return Target("<=", 0.2) if op == "lease" else Target("<=", 1.1)


def scale_rows(figures: dict[str, Any]) -> list[str]:
    sizes = figures.get("sizes", [])
    head = " | ".join(f"{n:,}" for n in sizes)
    out = [
        "",
        f"Time per operation at each size ({figures.get('store', '?')} store), growth exponent "
        "and its target:",
        "",
        f"| operation | {head} | exponent | target | |",
        "|---|" + "---|" * len(sizes) + "---|---|---|",
    ]
    for op, label in SCALE_OPS.items():
        times = " | ".join(fmt(figures.get(f"{op}_{n}_ms"), "ms") for n in sizes)
        exponent = figures.get(f"{op}_exponent")
        target = exponent_target(op)
        verdict = "—" if exponent is None else ("pass" if target.met(exponent) else "**miss**")
        out.append(f"| {label} | {times} | {fmt(exponent)} | {target} | {verdict} |")
    extra = (
        ("lease p99", "lease_p99_{n}_ms", "ms"),
        ("COCO export", "export_items_per_s_{n}", "items/s"),
        ("relay", "relay_events_per_s_{n}", "events/s"),
    )
    for label, key, unit in extra:
        cells = " | ".join(fmt(figures.get(key.format(n=n)), unit) for n in sizes)
        out.append(f"| {label} | {cells} | | | |")
    return out


def peer_lines(bench: Benchmark, figures: dict[str, Any] | None) -> list[str]:
    out = []
    for name, key, setup in bench.peers:
        version = (figures or {}).get(key) or "not run"
        out += [f"**Peer: {name} {version}.** {setup}", ""]
    return out


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM; {m['os']}; "
        f"Python {m['python']}; PyTorch {m['torch']}"
    )


def render(results: dict[str, Any], note: str) -> str:
    now = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `bench/run_all.py` from each benchmark's last-line JSON (raw: "
        "`docs/benchmarks.json`). Every figure stands beside the baseline the benchmark "
        "measured in the same run (a peer tool — Label Studio, MLflow, KServe — where the "
        "issue names one, each in its own environment under ~/.cache/kiln/peers, version "
        "pinned, setup below) and the targets of issues #8 and #24. Re-run with "
        "`.venv/bin/python bench/run_all.py` (`--quick` for small sizes, `--only a,b` for some).",
        "",
        f"Machine: {machine_line(now)}.",
        "",
    ]
    if note:
        lines += [f"**Conditions.** {note}", ""]
    summary = ["| benchmark | target | measured | |", "|---|---|---|---|"]
    for bench in BENCHMARKS:
        entry = results.get(bench.name)
        if entry is None:
            continue
        for f in bench.figures:
            if f.target is None:
                continue
            value = entry.get("figures", {}).get(f.key)
            verdict = "—" if value is None else ("pass" if f.target.met(value) else "**miss**")
            summary.append(
                f"| {bench.name}: {f.label} | {f'{f.target} {f.unit}'.strip()} | "
                f"{fmt(value, f.unit)} | "
                f"{verdict} |"
            )
    for bench in BENCHMARKS:
        entry = results.get(bench.name)
        if entry is None or bench.name != "scale":
            continue
        figures = entry.get("figures") or {}
        for op, label in SCALE_OPS.items():
            exponent = figures.get(f"{op}_exponent")
            target = exponent_target(op)
            verdict = "—" if exponent is None else ("pass" if target.met(exponent) else "**miss**")
            summary.append(
                f"| scale: {label}, growth exponent | {target} | {fmt(exponent)} | {verdict} |"
            )
    peers = ["| peer | version | benchmark |", "|---|---|---|"]
    for bench in BENCHMARKS:
        figures = (results.get(bench.name) or {}).get("figures") or {}
        for name, key, _ in bench.peers:
            peers.append(f"| {name} | {figures.get(key) or 'not run'} | {bench.name} |")
    lines += ["## Targets at a glance", "", *summary, ""]
    lines += ["## Peers", "", *peers, ""]
    for bench in BENCHMARKS:
        entry = results.get(bench.name)
        lines += [f"## {bench.name} (`bench/{bench.script}`)", "", bench.about, ""]
        lines += peer_lines(bench, (entry or {}).get("figures"))
        if entry is None:
            lines += ["Not run yet.", ""]
            continue
        args = " ".join(entry.get("args", [])) or "(defaults)"
        commit = (entry.get("machine") or {}).get("commit", "?")
        lines.append(
            f"Ran {entry['run_at']} (HEAD {commit}) with `{args}` in {entry['seconds']:.0f} s; "
            "load average "
            f"(1 min) {entry['load_before']} before, {entry['load_after']} after."
        )
        if entry.get("machine") and entry["machine"]["cpu"] != now["cpu"]:
            lines.append(f"On another machine: {machine_line(entry['machine'])}.")
        lines.append("")
        if entry.get("error"):
            lines += [f"**Did not complete:** {entry['error']}.", ""]
            lines += ["```", *entry.get("log_tail", []), "```", ""]
        figures = entry.get("figures")
        if figures is None:
            continue
        if figures.get("error"):
            lines += [f"Benchmark reported: `{figures['error']}`", ""]
        lines += figure_rows(bench, figures)
        if bench.name == "soak":
            lines += soak_rows(figures)
        if bench.name == "scale":
            lines += scale_rows(figures)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    names = [b.name for b in BENCHMARKS]
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, a 90 s soak")
    parser.add_argument("--note", default="", help="conditions to state in the report")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the report from the raw results"
    )
    parser.add_argument("--out", type=Path, default=DOC)
    parser.add_argument("--raw", type=Path, default=RAW)
    args = parser.parse_args()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or names
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown benchmarks {unknown}; known: {', '.join(names)}")
    results: dict[str, Any] = {}
    if args.raw.exists():
        previous = json.loads(args.raw.read_text())
        results = previous.get("results", {})
        if not args.note:
            args.note = previous.get("note", "")
    if args.render_only:
        args.raw.write_text(json.dumps({"note": args.note, "results": results}, indent=1))
        args.out.write_text(render(results, args.note))
        return
    log_dir = REPO / ".kiln" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    for bench in BENCHMARKS:
        if bench.name in chosen:
            results[bench.name] = run_one(bench, args.quick, log_dir)
            # Written after each benchmark, so an interrupted run keeps what finished.
            args.raw.write_text(json.dumps({"note": args.note, "results": results}, indent=1))
            args.out.write_text(render(results, args.note))
    print(
        json.dumps(
            {
                n: {"seconds": results[n]["seconds"], "error": results[n].get("error")}
                for n in chosen
            }
        )
    )


if __name__ == "__main__":
    main()
