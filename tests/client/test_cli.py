"""The user's commands against a running Kiln: each answers with ``--json`` for scripts, says
what happened in words without it, and fails with one line and a non-zero status."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.client.conftest import REPO, RunningKiln, ServedModel, write_image_folder

pytestmark = pytest.mark.integration


def kiln(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kiln_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def ok(env: dict[str, str], *args: str, timeout: float = 300) -> Any:
    """Run a command with --json; its answer."""
    done = kiln(env, *args, "--json", timeout=timeout)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def user(kiln_up: RunningKiln) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    return {**env, "KILN_URL": kiln_up.url, "KILN_TOKEN": kiln_up.token("cli-user", "admin")}


def test_version_prints_the_package_version() -> None:
    done = kiln(dict(os.environ), "--version")
    assert done.returncode == 0 and done.stdout.startswith("kiln 0.")


def test_dataset_create_upload_versions_export_import(user: dict[str, str], tmp_path: Path) -> None:
    folder = write_image_folder(tmp_path / "images", per_class=4)
    ds = ok(user, "dataset", "create", "cli-dataset")
    uploaded = ok(user, "dataset", "upload", ds["id"], str(folder), "--labels-from-folders")
    assert uploaded["files"] == 12 and uploaded["version"]["version"] == 1
    assert uploaded["version"]["labelled_count"] == 12
    # In words: a progress bar on stderr, the outcome on stdout; nothing sent again.
    again = kiln(user, "dataset", "upload", ds["id"], str(folder), "--labels-from-folders")
    assert again.returncode == 0, again.stderr
    assert "version 2: 12 files, 0 sent, 12 already stored, 0 rejected" in again.stdout
    versions = ok(user, "dataset", "versions", ds["id"])
    assert sorted(v["version"] for v in versions) == [1, 2]
    table = kiln(user, "dataset", "versions", ds["id"])
    assert table.stdout.splitlines()[0].split()[:2] == ["version", "item_count"]

    out = tmp_path / "v1.jsonl"
    exported = ok(user, "dataset", "export", ds["id"], "1", str(out))
    assert exported["bytes"] == out.stat().st_size > 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 12

    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((folder / "val").rglob("*.png")):
            zf.write(path, f"{path.parent.name}/extra-{path.name}")
    job = ok(user, "dataset", "import", ds["id"], str(archive), "--format", "imagefolder")
    assert job["status"] == "succeeded"
    assert max(v["version"] for v in ok(user, "dataset", "versions", ds["id"])) == 3


def test_failures_are_one_line_and_non_zero(user: dict[str, str], tmp_path: Path) -> None:
    missing = kiln(user, "dataset", "versions", "no-such-dataset")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("kiln: error: 404")
    assert len(missing.stderr.strip().splitlines()) == 1 and missing.stdout == ""

    bad_token = kiln({**user, "KILN_TOKEN": "not-a-token"}, "model", "list")
    assert bad_token.returncode == 1 and bad_token.stderr.startswith("kiln: error: 401")

    no_kiln = kiln({**user, "KILN_URL": "http://127.0.0.1:9"}, "job", "show", "x")
    assert no_kiln.returncode == 1 and "kiln: error:" in no_kiln.stderr
    assert len(no_kiln.stderr.strip().splitlines()) == 1

    no_file = kiln(user, "predict", "any", str(tmp_path / "nothing.png"))
    assert no_file.returncode == 1 and "no such file" in no_file.stderr

    bad_param = kiln(user, "train", "submit", "x", "--template", "image-cnn", "-p", "epochs")
    assert bad_param.returncode == 1 and "key=value" in bad_param.stderr

    not_a_template = kiln(user, "train", "submit", "x", "--template", "no-such-template")
    assert not_a_template.returncode == 1
    assert not_a_template.stderr.startswith("kiln: error: 4")


def test_train_watch_shows_progress_and_ends_with_the_evaluation(
    user: dict[str, str], tmp_path: Path
) -> None:
    folder = write_image_folder(tmp_path / "images", per_class=6)
    ds = ok(user, "dataset", "create", "cli-train")
    ok(user, "dataset", "upload", ds["id"], str(folder), "--labels-from-folders")
    params = ["-p", "image_size=8", "-p", "image_mode=L", "-p", "width=8", "-p", "batch_size=8"]
    watched = kiln(
        user,
        "train",
        "submit",
        ds["id"],
        "--template",
        "image-cnn",
        "--team",
        "cli",
        *params,
        "-p",
        "epochs=3",
        "--watch",
    )
    assert watched.returncode == 0, watched.stdout[-2000:] + watched.stderr[-2000:]
    assert "epoch" in watched.stderr and "3/3" in watched.stderr  # the live bar ran to the end
    summary = watched.stdout.strip().splitlines()
    assert summary[0].startswith("job ") and summary[0].endswith(" succeeded")
    assert any(line.split()[0] == "accuracy" for line in summary[1:])
    job_id = summary[0].split()[1]
    shown = ok(user, "job", "show", job_id)
    assert shown["status"] == "succeeded" and shown["id"] == job_id

    # A long run to pause, resume and cancel.
    job = ok(
        user,
        "train",
        "submit",
        ds["id"],
        "--template",
        "image-cnn",
        "--team",
        "cli",
        *params,
        "-p",
        "epochs=1000",
        "-p",
        "batch_size=1",
    )
    assert job["status"] in ("queued", "running")
    paused = ok(user, "job", "pause", job["id"])
    assert paused["status"] == "paused" or paused.get("requested") == "pause"
    ok(user, "job", "resume", job["id"])
    cancelled = ok(user, "job", "cancel", job["id"])
    assert cancelled["status"] == "cancelled" or cancelled.get("requested") == "cancel"
    text = kiln(user, "job", "show", job["id"])
    assert text.returncode == 0 and job["id"] in text.stdout


def test_model_list_promote_download_and_predict(
    user: dict[str, str], served_model: ServedModel, tmp_path: Path
) -> None:
    models = ok(user, "model", "list")
    assert served_model.model in [m["name"] for m in models]
    versions = ok(user, "model", "list", served_model.model)
    assert [v["version"] for v in versions] == [served_model.version]
    promoted = ok(
        user, "model", "promote", served_model.model, str(served_model.version), "staging"
    )
    assert promoted["version"] == served_model.version
    downloaded = ok(
        user,
        "model",
        "download",
        served_model.model,
        str(served_model.version),
        "--to",
        str(tmp_path),
    )
    assert Path(downloaded["path"]).read_bytes()[:2] == b"PK"  # TorchScript is a zip

    dark = sorted((served_model.images / "val" / "dark").glob("*.png"))[:2]
    light = sorted((served_model.images / "val" / "light").glob("*.png"))[:2]
    answers = ok(user, "predict", served_model.endpoint, *map(str, dark + light), "--probabilities")
    labels = [a["predictions"][0]["label"] for a in answers]
    assert labels == ["dark", "dark", "light", "light"]
    probabilities = answers[0]["predictions"][0]["probabilities"]
    assert set(probabilities) == {"dark", "light"}
    assert abs(sum(probabilities.values()) - 1.0) < 1e-4
    words = kiln(user, "predict", served_model.endpoint, str(dark[0]))
    assert words.returncode == 0 and " dark " in words.stdout
