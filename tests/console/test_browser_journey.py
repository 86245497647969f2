"""The console in a real headless Chromium against a running embedded Kiln: the whole loop by
the roles that do each step, then every page by every role; any browser console error or
failed request fails the test. Screenshots go to the test's artefact directory."""

from __future__ import annotations

import io
import json
import os
import random
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.console.conftest import WEB


def png(colour: int, seed: int, size: int = 8) -> bytes:
    """A small grey image: dark or light with noise, so a tiny CNN can tell them apart."""
    rng = random.Random(seed)
    image = Image.new("L", (size, size))
    image.putdata([max(0, min(255, colour + rng.randint(-30, 30))) for _ in range(size * size)])
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def coco_zip(path: Path) -> Path:
    """Two 640×480 photos and a COCO file with their categories and no annotations yet."""
    with zipfile.ZipFile(path, "w") as archive:
        images = []
        for index, colour in enumerate(((180, 60, 40), (40, 90, 170)), start=1):
            buffer = io.BytesIO()
            Image.new("RGB", (640, 480), colour).save(buffer, format="JPEG")
            archive.writestr(f"images/part-{index}.jpg", buffer.getvalue())
            images.append(
                {"id": index, "file_name": f"part-{index}.jpg", "width": 640, "height": 480}
            )
        coco = {
            "images": images,
            "annotations": [],
            "categories": [{"id": 1, "name": "bolt"}, {"id": 2, "name": "nut"}],
        }
        archive.writestr("annotations.json", json.dumps(coco))
    return path


def external_model(path: Path) -> tuple[Path, str]:
    """A TorchScript file made outside Kiln (a tiny tabular classifier) and its metadata."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    scripted = torch.jit.script(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)))
    torch.jit.save(scripted, str(path))
    metadata = {
        "signature": {
            "inputs": [{"name": "features", "dtype": "FP32", "shape": [8]}],
            "outputs": [{"name": "logits", "dtype": "FP32", "shape": [2]}],
        },
        "label_map": ["dark", "light"],
        "preprocessing": {"kind": "tabular", "mean": [0.0], "std": [1.0]},
        "metrics": {"accuracy": 0.5},
        "description": "made elsewhere",
    }
    return path, json.dumps(metadata)


def seed(url: str) -> dict[str, str]:
    """What the journey does not make through pages: a small labelled classification dataset to
    train on, the model's promotion policy and an endpoint that follows its production alias."""
    tokens = httpx.get(f"{url}/console/session").json()["tokens"]
    engineer = {"authorization": f"Bearer {tokens['data-engineer']}"}
    ml = {"authorization": f"Bearer {tokens['ml-engineer']}"}
    admin = {"authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=url, timeout=60) as http:
        ds = http.post(
            "/api/dataset/v1/datasets",
            json={"name": "shapes", "task_type": "classification"},
            headers=engineer,
        ).json()
        draft = http.post(
            f"/api/dataset/v1/datasets/{ds['id']}/drafts", json={}, headers=engineer
        ).json()
        files, labels = [], {}
        for i in range(60):
            name = f"{'dark' if i % 2 else 'light'}-{i:02}.png"
            files.append(("files", (name, png(40 if i % 2 else 210, i), "image/png")))
            labels[name] = "dark" if i % 2 else "light"
        for split, part in (("train", files[:44]), ("val", files[44:])):
            r = http.post(
                f"/api/dataset/v1/datasets/{ds['id']}/drafts/{draft['id']}/items",
                files=part,
                data={
                    "labels": json.dumps({n: labels[n] for n, *_ in (f[1] for f in part)}),
                    "split": split,
                },
                headers=engineer,
            )
            assert r.status_code == 200, r.text
        r = http.post(
            f"/api/dataset/v1/datasets/{ds['id']}/drafts/{draft['id']}/commit",
            json={"message": "seeded"},
            headers=engineer,
        )
        assert r.status_code == 201, r.text
        r = http.post("/api/training/v1/teams", json={"name": "default"}, headers=admin)
        assert r.status_code == 201, r.text
        # A small grid search (two trials) whose ranking the run page shows.
        r = http.post(
            "/api/training/v1/searches",
            json={
                "base": {
                    "template": "image-cnn",
                    "params": {"epochs": 3, "image_size": 8, "batch_size": 8, "image_mode": "L"},
                    "team": "default",  # the team the development sign-in puts everyone in
                    "model_name": "shapes-search",
                    "dataset": {"dataset_id": ds["id"]},
                },
                "space": {"lr": [0.01, 0.003]},
                "target": "accuracy",
            },
            headers=ml,
        )
        assert r.status_code == 201, r.text
        model = "shapes-cnn"
        assert http.post("/api/registry/v1/models", json={"name": model}, headers=ml).is_success
        r = http.put(
            f"/api/registry/v1/models/{model}/policy",
            json={
                "gated_aliases": ["production"],
                "metric_gates": [{"metric": "accuracy", "op": ">=", "value": 0.5}],
                "regression_gates": [],
                "promoter_roles": ["ml-engineer"],
            },
            headers=admin,
        )
        assert r.is_success, r.text
        r = http.post(
            "/api/serving/v1/endpoints",
            # A canary endpoint: a version moved to the "canary" alias rolls out beside v1.
            json={
                "name": "shapes",
                "model_name": model,
                "alias": "production",
                "strategy": "canary",
            },
            headers=ml,
        )
        assert r.is_success, r.text
    return {"model": model, "endpoint": "shapes"}


@pytest.mark.timeout(900)
def test_the_whole_loop_in_a_real_browser(
    console_url: str, chromium: str, tmp_path: Path, node_modules: Path
) -> None:
    seeded = seed(console_url)
    artefacts = Path(os.environ.get("KILN_CONSOLE_ARTEFACTS", tmp_path / "screenshots"))
    artefacts.mkdir(parents=True, exist_ok=True)
    digit = tmp_path / "light.png"
    digit.write_bytes(png(210, 999))
    model_file, model_metadata = external_model(tmp_path / "external.pt")
    result = subprocess.run(
        ["node", str(WEB / "e2e" / "journey.mjs")],
        cwd=WEB,
        env={
            **os.environ,
            "KILN_URL": console_url,
            "CHROMIUM": chromium,
            "COCO_ZIP": str(coco_zip(tmp_path / "parts-coco.zip")),
            "DROP_IMAGE": str(digit),
            "ARTEFACTS": str(artefacts),
            "MODEL": seeded["model"],
            "ENDPOINT": seeded["endpoint"],
            "IMPORT_MODEL": str(model_file),
            "IMPORT_METADATA": model_metadata,
        },
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(result.stdout[-6000:])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert len(list(artefacts.glob("*.png"))) >= 40  # every page of every role, and the steps
