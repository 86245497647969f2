"""The client on its own: a fresh virtual environment with only ``libs/kiln_client`` installed
(no torch, no Kiln service code) uploads a folder, starts a training run and watches it to the
end against a running Kiln; uploading the same folder again sends no bytes."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.client.conftest import REPO, RunningKiln, write_image_folder

pytestmark = pytest.mark.integration

UV = Path.home() / ".cache" / "kiln" / "tools" / "uv-0.13.9" / "bin" / "uv"

SCRIPT = r"""
import json, sys
from kiln_client import Kiln, Progress, Status

folder = sys.argv[1]
with Kiln() as kiln:  # KILN_URL and KILN_TOKEN
    ds = kiln.datasets.create("fresh-venv", "classification")
    first = kiln.datasets.upload_folder(ds["id"], folder, labels_from_folders=True, progress=True)
    again = kiln.datasets.upload_folder(ds["id"], folder, labels_from_folders=True, progress=False)
    kiln.training.ensure_team("client")
    job = kiln.training.submit(
        "image-cnn", ds["id"], team="client", version=first["version"]["version"],
        params={"image_size": 8, "image_mode": "L", "width": 8, "epochs": 3, "batch_size": 8},
    )
    progress, statuses = 0, []
    for event in kiln.training.watch(job["id"]):
        if isinstance(event, Progress):
            progress += 1
        else:
            statuses.append(event.status)
    evaluation = kiln.training.evaluation(job["id"])
print(json.dumps({
    "files": first["files"], "sent": first["sent"], "skipped_first": first["skipped"],
    "items": first["version"]["item_count"], "sent_again": again["sent"],
    "skipped_again": again["skipped"], "progress_events": progress, "statuses": statuses,
    "evaluation_keys": sorted(evaluation),
}))
"""


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtual environment with libs/kiln_client and nothing else of Kiln's."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(Path.home() / ".cache" / "kiln" / "uv")}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run([str(UV), "venv", "--quiet", str(venv)], env=env, check=True, cwd=REPO)
    subprocess.run(
        [
            str(UV),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(venv / "bin" / "python"),
            str(REPO / "libs" / "kiln_client"),
        ],
        env=env,
        check=True,
        cwd=REPO,
    )
    return venv


def test_only_the_client_in_a_fresh_venv_uploads_trains_and_watches(
    client_venv: Path, kiln_up: RunningKiln, tmp_path: Path
) -> None:
    python = str(client_venv / "bin" / "python")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KILN_", "PYTHON"))}
    clean.pop("VIRTUAL_ENV", None)
    # Nothing of torch or the services is importable there.
    probe = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util as u; print([m for m in ('torch', 'kiln_core', "
            "'kiln_cli', 'kiln_training') if u.find_spec(m)])",
        ],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert probe.stdout.strip() == "[]"

    # Files of their own: blobs other tests stored would (rightly) not be sent again.
    folder = write_image_folder(tmp_path / "images", salt=uuid.uuid4().hex)
    env = {**clean, "KILN_URL": kiln_up.url, "KILN_TOKEN": kiln_up.token()}
    run = subprocess.run(
        [python, "-c", SCRIPT, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["files"] == 36 and result["items"] == 36
    assert result["sent"] == 36 and result["skipped_first"] == 0
    # The second upload found every blob by its hash: nothing was sent again.
    assert result["sent_again"] == 0 and result["skipped_again"] == 36
    assert result["progress_events"] >= 3  # at least one point per epoch
    assert result["statuses"][-1] == "succeeded", result
    assert result["evaluation_keys"], result
    assert "upload" in run.stderr  # the progress bar went to the terminal's stderr
