"""``kiln demo --task detection``: the closed loop for object detection, through the public APIs.

1. Synthetic canvases (scikit-learn's digits pasted at random places and sizes on noisy grey
   backgrounds, boxes known; :mod:`kiln_cli.detection_data`) are uploaded as version 1;
2. scripted annotators draw the boxes (with deliberate mistakes: a wrong digit or a box that
   misses) and a scripted reviewer sends wrong ones back;
3. the labelled version triggers ``detection-fcos``; the registry's policy promotes the model
   through an mAP@.5 gate (and, later, a per-class AP regression gate);
4. serving loads it on Triton and held-out canvases are predicted through ``:predict``; their
   mAP@.5 is computed from the served boxes with pycocotools' COCOeval;
5. production traffic whose boxes are uncertain is flagged; those images join the dataset,
   become urgent tasks carrying the model's boxes, are labelled, retraining runs and the new
   model rolls out as a canary that the endpoint's analysis promotes.

The last line is one JSON object: ``served_map50``, ``round2_map50``, ``rounds``, ``events``,
``seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import json
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from kiln_cli.demo import (
    DEMO_TEAM,
    DemoFailed,
    Kiln,
    count_events,
    embedded_services,
    stack_services,
    summary_table,
    trace_coverage,
    wait_for,
)
from kiln_cli.detection_data import DIGITS, Canvas, make_canvases

TRAIN_PARAMS: dict[str, Any] = {
    "input_size": 64,
    "image_mode": "L",
    "width": 32,
    "epochs": 20,
    "batch_size": 16,
    "lr": 0.006,
}
MAP50_GATE = 0.8
# mAP@.5 may not fall by more than 0.03 against production, nor a digit's AP by more than 0.15
# (a class has about 15 boxes in val, so its AP moves by several points between runs).
MAX_DROPS = (0.03, 0.15)
REVIEW_IOU = 0.7  # a drawn box this close to the truth is right


@dataclass
class DetectionRound:
    name: str
    model_version: int = 0
    val_map50: float | None = None
    served_map50: float | None = None
    flagged: int = 0
    labelled: int = 0
    corrected: int = 0
    seconds: float = 0.0


@dataclass
class Canvases:
    train: list[Canvas]
    val: list[Canvas]
    traffic: list[Canvas]
    test: list[Canvas]


def demo_canvases(seed: int, scale: float = 1.0) -> Canvases:
    """The demo's four sets; ``scale`` shrinks them for a quick run (tests)."""

    def n(count: int) -> int:
        return max(8, int(count * scale))

    return Canvases(
        train=make_canvases(n(500), seed, prefix="train"),
        val=make_canvases(n(100), seed + 1, prefix="val"),
        traffic=make_canvases(n(120), seed + 2, prefix="traffic"),
        test=make_canvases(n(100), seed + 3, prefix="test"),
    )


def iou(a: list[float], b: list[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def coco_map50(truth: list[Canvas], answers: list[list[dict[str, Any]]]) -> float:
    """mAP@.5 of served detections (``{label, score, bbox}``) by pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    index = {d: i for i, d in enumerate(DIGITS)}
    dataset: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": d} for d, i in index.items()],
    }
    results = []
    for image_id, (canvas, found) in enumerate(zip(truth, answers, strict=True)):
        dataset["images"].append({"id": image_id, "width": canvas.width, "height": canvas.height})
        for label, box in canvas.boxes:
            dataset["annotations"].append(
                {
                    "id": len(dataset["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": index[label],
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
        for d in found:
            if d["label"] in index:
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": index[d["label"]],
                        "bbox": d["bbox"],
                        "score": d["score"],
                    }
                )
    if not results:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return max(float(evaluator.stats[1]), 0.0)


@dataclass
class DetectionLoop:
    kiln: Kiln
    data: Canvases
    seed: int
    mistake_rate: float
    threshold: float
    say: Callable[[str], None]
    rounds: list[DetectionRound] = field(default_factory=list)
    dataset_id: str = ""
    project_id: str = ""
    truth: dict[str, list[tuple[str, list[float]]]] = field(default_factory=dict)
    run: str = field(default_factory=lambda: os.urandom(3).hex())

    @property
    def model(self) -> str:
        return f"digit-boxes-{self.run}"

    @property
    def endpoint(self) -> str:
        return f"digit-boxes-{self.run}"

    def __post_init__(self) -> None:
        every = self.data.train + self.data.val + self.data.traffic + self.data.test
        self.truth = {hashlib.sha256(c.png).hexdigest(): c.boxes for c in every}

    async def setup(
        self, train_params: dict[str, Any], map50_gate: float, max_drops: tuple[float, float]
    ) -> None:
        k = self.kiln
        dataset = await k.json(
            "dataset",
            "POST",
            "/v1/datasets",
            json={
                "name": f"digit-boxes-{self.seed}-{self.run}",
                "task_type": "detection",
                "description": "scikit-learn digits pasted on noisy 64×64 canvases",
                "team": DEMO_TEAM,
            },
        )
        self.dataset_id = dataset["id"]
        project = await k.json(
            "annotation",
            "POST",
            "/v1/projects",
            json={
                "name": f"boxes-{self.dataset_id}",
                "dataset_id": self.dataset_id,
                "label_schema": {"kind": "boxes", "labels": [{"name": d} for d in DIGITS]},
                "batch_size": 50,
                "review_levels": 1,
                "team": DEMO_TEAM,
            },
        )
        self.project_id = project["id"]
        await k.call(
            "training",
            "POST",
            "/v1/teams",
            json={"name": DEMO_TEAM, "weight": 1.0},
            expect=(201, 409),
        )
        await k.call(
            "training",
            "POST",
            "/v1/triggers",
            json={
                "name": f"retrain-{self.model}",
                "dataset_id": self.dataset_id,
                "job": {
                    "template": "detection-fcos",
                    "team": DEMO_TEAM,
                    "model_name": self.model,
                    "seed": self.seed,
                    # The label map stays the same across rounds, whatever a version holds.
                    "params": {**train_params, "classes": ",".join(DIGITS)},
                    "resources": {"cpu": 2},
                },
            },
        )
        await k.call(
            "registry",
            "POST",
            "/v1/models",
            json={"name": self.model, "team": DEMO_TEAM},
            expect=(201, 409),
        )
        await k.call(
            "registry",
            "PUT",
            f"/v1/models/{self.model}/policy",
            json={
                "gated_aliases": ["production", "canary"],
                "metric_gates": [{"metric": "map50", "op": ">=", "value": map50_gate}],
                "regression_gates": [
                    {"metric": "map50", "max_drop": max_drops[0]},
                    {"metric": "ap.*", "max_drop": max_drops[1]},
                ],
                "promoter_roles": ["ml-engineer"],
                "auto_promote": "production",
            },
        )
        common = {"model_name": self.model, "alias": "production", "team": DEMO_TEAM}
        await k.call(
            "serving",
            "POST",
            "/v1/endpoints",
            json={
                "name": self.endpoint,
                **common,
                "candidate_alias": "canary",
                "strategy": "canary",
                "canary_steps": [50, 100],
                "step_interval_s": 1.0,
                "min_requests_per_step": 20,
                "max_latency_ratio": 25.0,
                "confidence_threshold": self.threshold,
                "box_score_floor": 0.25,
                "sample_rate": 0.1,
            },
            expect=(201, 409),
        )
        # Held-out canvases go to an endpoint of their own that flags nothing and answers
        # every box (the COCO evaluator wants low-scored boxes too).
        await k.call(
            "serving",
            "POST",
            "/v1/endpoints",
            json={"name": f"{self.endpoint}-eval", **common, "box_score_floor": 0.0},
            expect=(201, 409),
        )

    async def set_auto_promote(self, alias: str) -> None:
        policy = await self.kiln.json("registry", "GET", f"/v1/models/{self.model}/policy")
        body = {k: policy[k] for k in ("gated_aliases", "metric_gates", "regression_gates")}
        body |= {"promoter_roles": policy["promoter_roles"], "auto_promote": alias}
        await self.kiln.call("registry", "PUT", f"/v1/models/{self.model}/policy", json=body)

    async def alias(self, alias: str) -> int | None:
        aliases = await self.kiln.json("registry", "GET", f"/v1/models/{self.model}/aliases")
        return next((a["version"] for a in aliases if a["alias"] == alias), None)

    async def ingest(self) -> int:
        k = self.kiln
        draft = await k.json("dataset", "POST", f"/v1/datasets/{self.dataset_id}/drafts", json={})
        for split, canvases in (("train", self.data.train), ("val", self.data.val)):
            for start in range(0, len(canvases), 200):
                batch = canvases[start : start + 200]
                result = await k.json(
                    "dataset",
                    "POST",
                    f"/v1/datasets/{self.dataset_id}/drafts/{draft['id']}/items",
                    files=[("files", (c.name, c.png, "image/png")) for c in batch],
                    data={"split": split},
                )
                if result.get("rejected"):
                    raise DemoFailed(f"upload rejected files: {result['rejected'][:3]}")
        version = await k.json(
            "dataset",
            "POST",
            f"/v1/datasets/{self.dataset_id}/drafts/{draft['id']}/commit",
            json={"message": "digit canvases, first batch"},
        )
        return int(version["version"])

    def _draw(self, blob: str, rng: random.Random, careless: bool) -> list[dict[str, Any]]:
        """The boxes an annotator draws: the truth, or on a careless pass one mistake."""
        boxes: list[dict[str, Any]] = [
            {"type": "box", "label": d, "bbox": list(b)} for d, b in self.truth[blob]
        ]
        if careless and boxes:
            wrong = boxes[rng.randrange(len(boxes))]
            if rng.random() < 0.5:
                wrong["label"] = rng.choice([d for d in DIGITS if d != wrong["label"]])
            else:  # a box slid by half its width: IoU 1/3, inside the 64×64 image
                x, y, w, h = wrong["bbox"]
                shift = w / 2 if x + 1.5 * w <= 64 else -w / 2
                wrong["bbox"] = [x + shift, y, w, h]
        return boxes

    def _right(self, blob: str, given: list[dict[str, Any]]) -> bool:
        truth = list(self.truth[blob])
        if len(given) != len(truth):
            return False
        for label in given:
            match = [
                t
                for t in truth
                if t[0] == label["label"] and iou(t[1], label["bbox"]) >= REVIEW_IOU
            ]
            if not match:
                return False
            truth.remove(match[0])
        return True

    async def label(self, expected_tasks: int) -> tuple[int, int]:
        """Scripted annotators draw the boxes; a reviewer checks them against the truth and
        sends wrong ones back. Returns (items labelled, items corrected after review)."""
        k = self.kiln
        pid = self.project_id

        async def queued() -> int | None:
            counts = (await k.json("annotation", "GET", f"/v1/projects/{pid}"))["task_counts"]
            return counts.get("queued", 0) if counts.get("queued", 0) >= expected_tasks else None

        await wait_for("annotation tasks", queued, timeout_s=60)
        rng = random.Random(self.seed)
        labelled = corrected = 0
        done = asyncio.Event()

        async def annotator(name: str) -> None:
            nonlocal labelled
            while not done.is_set():
                response = await k.call(
                    "annotation", "POST", f"/v1/projects/{pid}/lease", who=(name, "annotator")
                )
                if response.status_code == 204:
                    await asyncio.sleep(0.05)
                    continue
                task = response.json()
                rework = task["status"] == "rework"
                labels = {
                    item["item_id"]: self._draw(
                        item["blob"], rng, not rework and rng.random() < self.mistake_rate
                    )
                    for item in task["items"]
                }
                await k.call(
                    "annotation",
                    "POST",
                    f"/v1/tasks/{task['id']}/submission",
                    who=(name, "annotator"),
                    json={"labels": labels},
                )
                labelled += 0 if rework else len(labels)

        async def reviewer() -> None:
            nonlocal corrected
            while not done.is_set():
                page = await k.json(
                    "annotation",
                    "GET",
                    f"/v1/projects/{pid}/tasks",
                    params={"status": "in_review", "limit": 50},
                    who=("rita", "reviewer"),
                )
                for task in page["items"]:
                    blobs = {i["item_id"]: i["blob"] for i in task["items"]}
                    wrong = [
                        item
                        for item, given in (task["labels"] or {}).items()
                        if not self._right(blobs[item], given)
                    ]
                    await k.call(
                        "annotation",
                        "POST",
                        f"/v1/tasks/{task['id']}/review",
                        who=("rita", "reviewer"),
                        json={
                            "accept": not wrong,
                            "comment": f"{len(wrong)} wrong: {', '.join(wrong[:3])}"
                            if wrong
                            else "",
                        },
                    )
                    corrected += len(wrong)
                if not page["items"]:
                    counts = (await k.json("annotation", "GET", f"/v1/projects/{pid}"))[
                        "task_counts"
                    ]
                    if set(counts) <= {"committed"}:
                        done.set()
                    await asyncio.sleep(0.05)

        await asyncio.gather(annotator("ann-1"), annotator("ann-2"), annotator("ann-3"), reviewer())
        return labelled, corrected

    async def newest_version(self, source: str, after: int, what: str) -> dict[str, Any]:
        async def find() -> dict[str, Any] | None:
            page = await self.kiln.json(
                "dataset", "GET", f"/v1/datasets/{self.dataset_id}/versions"
            )
            found = [
                v
                for v in page["items"]
                if v["version"] > after and v["lineage"]["source"] == source
            ]
            return max(found, key=lambda v: v["version"]) if found else None

        return await wait_for(what, find, timeout_s=90)

    async def trained_model(self, after: int, timeout_s: float) -> dict[str, Any]:
        async def find() -> dict[str, Any] | None:
            page = await self.kiln.call(
                "registry", "GET", f"/v1/models/{self.model}/versions", expect=(200, 404)
            )
            if page.status_code == 404:
                return None
            found = [v for v in page.json()["items"] if v["version"] > after]
            return max(found, key=lambda v: v["version"]) if found else None

        return await wait_for("the trained detector", find, timeout_s=timeout_s, every_s=1.0)

    async def serving_version(self, version: int, timeout_s: float, endpoint: str = "") -> None:
        name = endpoint or self.endpoint

        async def stable() -> bool:
            state = await self.kiln.json("serving", "GET", f"/v1/endpoints/{name}")
            current = state.get("stable") or {}
            return bool(current.get("version") == version and not state.get("candidate"))

        await wait_for(f"{name} to serve version {version}", stable, timeout_s=timeout_s)

    async def predict(self, canvases: list[Canvas]) -> list[dict[str, Any]]:
        """Production traffic: one request per image, raw bytes, a few at a time."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(canvases), 8):
            batch = canvases[start : start + 8]
            answers = await asyncio.gather(
                *(
                    self.kiln.json(
                        "serving",
                        "POST",
                        f"/v1/endpoints/{self.endpoint}:predict",
                        who=("app", "viewer"),
                        content=c.png,
                        content_type="image/png",
                    )
                    for c in batch
                )
            )
            out += [{**a["predictions"][0], "version": a["version"]} for a in answers]
        return out

    async def predict_held_out(self) -> list[list[dict[str, Any]]]:
        """The held-out canvases in JSON batches of base64 images, every box answered."""
        out: list[list[dict[str, Any]]] = []
        for start in range(0, len(self.data.test), 16):
            batch = self.data.test[start : start + 16]
            answer = await self.kiln.json(
                "serving",
                "POST",
                f"/v1/endpoints/{self.endpoint}-eval:predict",
                who=("app", "viewer"),
                json={"inputs": [base64.b64encode(c.png).decode() for c in batch]},
            )
            out += [p["detections"] for p in answer["predictions"]]
        return out

    async def released_as_canary(self, version: int) -> None:
        """Wait until the registry moved ``canary`` to ``version``; its refusal (the failed
        gates, from the version's operation log) ends the demo at once."""

        async def decided() -> bool:
            if await self.alias("canary") == version:
                return True
            log = await self.kiln.json(
                "registry", "GET", f"/v1/models/{self.model}/versions/{version}/log"
            )
            refused = [op for op in log if op["action"] == "promotion.refused"]
            if refused:
                gates = refused[-1]["details"].get("failed_gates", [])
                raise DemoFailed(f"v{version} was not let out as a canary: {gates}")
            return False

        await wait_for(f"v{version} to become the canary", decided, timeout_s=60)

    async def canary_traffic(self, version: int) -> tuple[dict[int, int], float | None]:
        """Traffic until the canary of ``version`` is promoted: answers per version and the
        last score shift (KS) its analysis reported against the stable version."""
        answered: Counter[int] = Counter()
        shift: float | None = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            for p in await self.predict(self.data.traffic[:32]):
                answered[p["version"]] += 1
            state = await self.kiln.json("serving", "GET", f"/v1/endpoints/{self.endpoint}")
            stable = (state.get("stable") or {}).get("version")
            if stable == version and not state.get("candidate"):
                return dict(answered), shift
            mine = [d for d in state["deployments"] if d["version"] == version]
            if mine and mine[0]["analysis"].get("score_shift") is not None:
                shift = mine[0]["analysis"]["score_shift"]
            if mine and (
                mine[0]["state"] == "failed" or mine[0]["reason"].startswith("rolled back")
            ):
                raise DemoFailed(
                    f"the canary of v{version} ended {mine[0]['state']}: {mine[0]['reason']}"
                )
        where = [
            (d["version"], d["state"], d["reason"], d["analysis"]) for d in state["deployments"]
        ]
        raise DemoFailed(f"the canary of v{version} did not finish in 180s: {where}")


async def run_detection_loop(
    kiln: Kiln,
    *,
    seed: int,
    mistake_rate: float,
    threshold: float,
    say: Callable[[str], None],
    scale: float = 1.0,
    train_params: dict[str, Any] | None = None,
    map50_gate: float = MAP50_GATE,
    max_drops: tuple[float, float] = MAX_DROPS,
) -> dict[str, Any]:
    """Both rounds of the loop against the services behind ``kiln``; ``scale`` and
    ``train_params`` make a quick run (tests), ``map50_gate`` the promotion gate and
    ``max_drops`` the regression gates (mAP@.5, every class's AP) against production."""
    started = time.monotonic()
    data = demo_canvases(seed, scale)
    loop = DetectionLoop(kiln, data, seed, mistake_rate, threshold, say)
    boxes = sum(len(c.boxes) for c in data.train + data.val)
    say(
        f"canvases: {len(data.train)} train, {len(data.val)} val ({boxes} digit boxes), "
        f"{len(data.traffic)} production traffic, {len(data.test)} held out"
    )
    await loop.setup(train_params or TRAIN_PARAMS, map50_gate, max_drops)
    training_timeout = 900.0

    one = DetectionRound("round 1")
    t0 = time.monotonic()
    v1 = await loop.ingest()
    say(f"[1/5] ingested {len(data.train) + len(data.val)} canvases as dataset version {v1}")
    tasks = (len(data.train) + len(data.val) + 49) // 50
    one.labelled, one.corrected = await loop.label(tasks)
    labelled = await loop.newest_version("labels", v1, "the labelled version")
    say(
        f"[2/5] boxes drawn on {one.labelled} canvases in {tasks} tasks; review sent back "
        f"{one.corrected} wrong ones; labelled version {labelled['version']}"
    )
    model = await loop.trained_model(0, timeout_s=training_timeout)
    one.model_version = model["version"]
    one.val_map50 = model["metrics"].get("map50")

    async def in_production() -> bool:
        return await loop.alias("production") == model["version"]

    try:
        await wait_for("the gate to promote the first detector", in_production, timeout_s=30)
    except DemoFailed:
        raise DemoFailed(
            f"v{model['version']} (val mAP@.5 {one.val_map50}) did not pass the gate"
            f" map50 >= {map50_gate}"
        ) from None
    say(
        f"[3/5] trained and registered v{model['version']} (val mAP@.5 {one.val_map50:.3f},"
        f" mAP {model['metrics'].get('map', 0):.3f}); promoted through the mAP@.5 gate"
    )
    await loop.serving_version(model["version"], timeout_s=120)
    await loop.serving_version(model["version"], 120, f"{loop.endpoint}-eval")
    one.served_map50 = coco_map50(data.test, await loop.predict_held_out())
    say(
        f"[4/5] serving v{model['version']} on Triton: {len(data.test)} held-out canvases, "
        f"mAP@.5 {one.served_map50:.3f} (COCOeval on the served boxes)"
    )
    one.seconds = time.monotonic() - t0
    loop.rounds.append(one)

    two = DetectionRound("round 2")
    t0 = time.monotonic()
    traffic = await loop.predict(data.traffic)
    two.flagged = sum(p["confidence"] < threshold for p in traffic)
    say(
        f"[5/5] {len(traffic)} production predictions, {two.flagged} with boxes scored under "
        f"{threshold} flagged for labelling"
    )
    two.served_map50 = one.served_map50
    if two.flagged:
        await loop.set_auto_promote("canary")
        flagged = await loop.newest_version(
            "active-learning", labelled["version"], "flagged canvases to join the dataset"
        )
        two.labelled, two.corrected = await loop.label(expected_tasks=1)
        labelled2 = await loop.newest_version("labels", flagged["version"], "the labelled version")
        say(
            f"      flagged canvases became version {flagged['version']}, their boxes were "
            f"checked (review caught {two.corrected}) → labelled version {labelled2['version']}"
        )
        model2 = await loop.trained_model(model["version"], timeout_s=training_timeout)
        two.model_version = model2["version"]
        two.val_map50 = model2["metrics"].get("map50")
        await loop.released_as_canary(model2["version"])
        say(
            f"      retrained v{model2['version']} (val mAP@.5 {two.val_map50:.3f}); the gates"
            " let it out as a canary"
        )
        answered, shift = await loop.canary_traffic(model2["version"])
        shifted = f"; answer scores KS {shift:.2f} against v1" if shift is not None else ""
        say(
            f"      canary analysis promoted v{model2['version']} after "
            f"{answered.get(model2['version'], 0)} of {sum(answered.values())} requests{shifted}"
        )
        await loop.kiln.call(
            "registry",
            "POST",
            f"/v1/models/{loop.model}/aliases/production",
            who=("mia", "ml-engineer"),
            json={"version": model2["version"], "reason": "demo: production"},
        )
        await loop.serving_version(model2["version"], 120, f"{loop.endpoint}-eval")
        two.served_map50 = coco_map50(data.test, await loop.predict_held_out())
    two.seconds = time.monotonic() - t0
    loop.rounds.append(two)
    return {
        "rounds": loop.rounds,
        "served_map50": one.served_map50,
        "round2_map50": two.served_map50,
        "seconds": time.monotonic() - started,
        "dataset_id": loop.dataset_id,
    }


async def run_detection_demo(
    out_dir: Path,
    *,
    stack: str = "embedded",
    seed: int = 7,
    mistake_rate: float = 0.05,
    threshold: float = 0.5,
    scale: float = 1.0,
    train_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the detection loop; returns the figures of the last line."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before anything runs

    def say(message: str) -> None:
        typer.echo(f"{time.monotonic() - started:6.1f}s  {message}")

    services = embedded_services(out_dir) if stack == "embedded" else stack_services()
    say(f"starting Kiln ({stack}) for the detection loop; output in {out_dir}")
    async with services as (clients, settings):
        kiln = Kiln(clients, settings)
        result = await run_detection_loop(
            kiln,
            seed=seed,
            mistake_rate=mistake_rate,
            threshold=threshold,
            say=say,
            scale=scale,
            train_params=train_params,
        )
        events = await count_events(stack)
    rounds: list[DetectionRound] = result["rounds"]
    coverage = trace_coverage(out_dir / "traces.jsonl")
    typer.echo("")
    typer.echo(summary_table(rounds, "mAP50", "val_map50", "served_map50"))
    typer.echo("")
    typer.echo(f"events exchanged: {events}; API requests: {kiln.requests}")
    figures = {
        "served_map50": round(result["served_map50"], 4),
        "round2_map50": round(result["round2_map50"], 4),
        "rounds": len(rounds),
        "events": events,
        "seconds": round(time.monotonic() - started, 1),
        "trace_services": coverage["services"],
        "task": "detection",
        "stack": stack,
    }
    (out_dir / "summary.json").write_text(json.dumps(figures, indent=2))
    return figures
