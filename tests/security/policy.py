"""Kiln's authorisation policy, written down on its own: which roles may call each endpoint.

This table is the specification the services are tested against; it is deliberately not read
from the code under test. ``admin`` may call everything. ``PUBLIC`` endpoints need no token.
A new endpoint without a row here fails ``test_every_route_has_a_policy``. docs/security.md
shows the same table for people."""

from __future__ import annotations

ROLES = ("admin", "data-engineer", "annotator", "reviewer", "ml-engineer", "viewer")

PUBLIC: frozenset[str] | None = None
EVERYONE = frozenset(ROLES)


def only(*roles: str) -> frozenset[str]:
    """The roles named, plus admin."""
    unknown = set(roles) - set(ROLES)
    assert not unknown, f"policy names unknown roles {unknown}"
    return frozenset({"admin", *roles})


ADMIN = only()
DATA = only("data-engineer")
ML = only("ml-engineer")
# Every service answers the ping of the platform's smoke test (kiln_core.ping).
PING_SENDERS = only("ml-engineer", "data-engineer")
# Annotators' tools call models (pre-labelling); reviewers judge people's labels only.
PREDICTORS = only("viewer", "ml-engineer", "data-engineer", "annotator")
HEALTH = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("POST", "/v1/pings"): PING_SENDERS,
    ("GET", "/v1/pings/received"): EVERYONE,
}

POLICY: dict[str, dict[tuple[str, str], frozenset[str] | None]] = {
    "dataset": {
        **HEALTH,
        ("POST", "/v1/datasets"): DATA,
        ("GET", "/v1/datasets"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}"): EVERYONE,
        ("PATCH", "/v1/datasets/{dataset_id}"): DATA,
        ("DELETE", "/v1/datasets/{dataset_id}"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/archive"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/restore"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/drafts"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/drafts/{draft_id}/items"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/drafts/{draft_id}/blob-items"): DATA,
        ("DELETE", "/v1/datasets/{dataset_id}/drafts/{draft_id}/items/{item_id}"): DATA,
        # the console's images: whoever may read the items may see them
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/items/{item_id}/image"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/items/{item_id}/thumbnail"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/blobs/{sha256}"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/blobs/{sha256}/thumbnail"): EVERYONE,
        ("POST", "/v1/datasets/{dataset_id}/drafts/{draft_id}/commit"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/imports"): DATA,
        ("GET", "/v1/imports/{import_id}"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}"): EVERYONE,
        ("GET", "/v1/jobs"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}"): EVERYONE,
        ("DELETE", "/v1/datasets/{dataset_id}/versions/{version}"): DATA,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/items"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/manifest"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/diff"): EVERYONE,
        ("POST", "/v1/datasets/{dataset_id}/versions/{version}/splits"): DATA,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/stats"): EVERYONE,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/export"): EVERYONE,
        ("POST", "/v1/datasets/{dataset_id}/versions/{version}/augmentations"): DATA,
        ("POST", "/v1/datasets/{dataset_id}/versions/{version}/quality"): DATA,
        ("GET", "/v1/datasets/{dataset_id}/versions/{version}/quality"): EVERYONE,
        ("POST", "/v1/purge"): ADMIN,
        # Sharing is the owning team's data engineers' call; the log is every member's to read.
        ("PUT", "/v1/datasets/{dataset_id}/shares/{team}"): DATA,
        ("DELETE", "/v1/datasets/{dataset_id}/shares/{team}"): DATA,
        ("GET", "/v1/team-operations"): EVERYONE,
    },
    "annotation": {
        **HEALTH,
        ("POST", "/v1/projects"): DATA,
        ("GET", "/v1/projects"): EVERYONE,
        ("GET", "/v1/projects/{project_id}"): EVERYONE,
        ("POST", "/v1/projects/{project_id}/tasks"): DATA,
        # Annotators see only their own tasks in it (tests/security/test_annotator_isolation.py).
        ("GET", "/v1/projects/{project_id}/tasks"): EVERYONE,
        ("POST", "/v1/projects/{project_id}/lease"): only("annotator"),
        ("GET", "/v1/tasks/{task_id}"): EVERYONE,
        ("POST", "/v1/tasks/{task_id}/submission"): only("annotator"),
        ("POST", "/v1/tasks/{task_id}/submission-and-lease"): only("annotator"),
        ("POST", "/v1/tasks/{task_id}/review"): only("reviewer"),
        ("GET", "/v1/tasks/{task_id}/audit"): EVERYONE,
        ("POST", "/v1/projects/{project_id}/commits"): DATA,
        ("GET", "/v1/projects/{project_id}/commits"): EVERYONE,
        ("POST", "/v1/projects/{project_id}/prelabel-jobs"): DATA,
        ("GET", "/v1/prelabel-jobs/{job_id}"): EVERYONE,
        ("POST", "/v1/projects/{project_id}/selections"): DATA,
        ("GET", "/v1/selections/{job_id}"): EVERYONE,
        ("GET", "/v1/projects/{project_id}/prelabels"): EVERYONE,
        # Per-annotator statistics: for the people who manage and review annotators.
        ("GET", "/v1/projects/{project_id}/annotators"): only("reviewer", "data-engineer"),
        ("GET", "/v1/projects/{project_id}/overlaps"): only("reviewer", "data-engineer"),
        ("POST", "/v1/projects/{project_id}/gold"): DATA,
    },
    "registry": {
        **HEALTH,
        ("POST", "/v1/models"): ML,
        ("GET", "/v1/models"): EVERYONE,
        ("GET", "/v1/models/{name}"): EVERYONE,
        ("PATCH", "/v1/models/{name}"): ML,
        ("GET", "/v1/models/{name}/versions"): EVERYONE,
        ("POST", "/v1/models/{name}/versions"): ML,
        ("GET", "/v1/models/{name}/versions/{version}"): EVERYONE,
        ("PATCH", "/v1/models/{name}/versions/{version}"): ML,
        ("POST", "/v1/models/{name}/versions/{version}/archive"): ML,
        ("GET", "/v1/models/{name}/versions/{version}/artifact"): EVERYONE,
        ("GET", "/v1/models/{name}/aliases"): EVERYONE,
        # Without a promotion policy naming other promoter roles (the matrix's model has none).
        ("POST", "/v1/models/{name}/aliases/{alias}"): ML,
        ("DELETE", "/v1/models/{name}/aliases/{alias}"): ML,
        ("GET", "/v1/models/{name}/aliases/{alias}/artifact"): EVERYONE,
        ("GET", "/v1/models/{name}/promotions"): EVERYONE,
        ("GET", "/v1/models/{name}/policy"): EVERYONE,
        ("PUT", "/v1/models/{name}/policy"): ADMIN,
        ("GET", "/v1/models/{name}/log"): EVERYONE,
        ("GET", "/v1/models/{name}/versions/{version}/log"): EVERYONE,
        ("POST", "/v1/models/{name}/versions/{version}/compress"): ML,
        ("GET", "/v1/jobs/{job_id}"): EVERYONE,
    },
    "training": {
        **HEALTH,
        ("GET", "/v1/templates"): EVERYONE,
        ("GET", "/v1/templates/{name}"): EVERYONE,
        ("GET", "/v1/teams"): EVERYONE,
        ("POST", "/v1/teams"): ADMIN,
        ("GET", "/v1/teams/{name}"): EVERYONE,
        ("GET", "/v1/teams/{name}/operations"): EVERYONE,
        # Who is in a team is its owners' and maintainers' call (their team role decides).
        ("GET", "/v1/teams/{name}/members"): EVERYONE,
        ("PUT", "/v1/teams/{name}/members/{subject}"): EVERYONE,
        ("DELETE", "/v1/teams/{name}/members/{subject}"): EVERYONE,
        ("PUT", "/v1/teams/{name}"): ADMIN,
        ("DELETE", "/v1/teams/{name}"): ADMIN,
        ("POST", "/v1/jobs"): ML,
        ("GET", "/v1/jobs"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}"): EVERYONE,
        ("POST", "/v1/jobs/{job_id}/pause"): ML,
        ("POST", "/v1/jobs/{job_id}/resume"): ML,
        ("POST", "/v1/jobs/{job_id}/cancel"): ML,
        ("GET", "/v1/jobs/{job_id}/metrics"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}/evaluation"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}/bad-cases"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}/artifact"): EVERYONE,
        ("GET", "/v1/jobs/{job_id}/events"): EVERYONE,
        ("POST", "/v1/searches"): ML,
        ("GET", "/v1/searches/{job_id}"): EVERYONE,
        ("POST", "/v1/triggers"): ML,
        ("GET", "/v1/triggers"): EVERYONE,
        ("GET", "/v1/triggers/{trigger_id}"): EVERYONE,
        ("PATCH", "/v1/triggers/{trigger_id}"): ML,
        ("DELETE", "/v1/triggers/{trigger_id}"): ML,
        ("GET", "/v1/queue"): EVERYONE,
    },
    "serving": {
        **HEALTH,
        # Deployments are operations' business: annotators and reviewers have no view of them.
        ("GET", "/v1/endpoints"): only("ml-engineer", "data-engineer", "viewer"),
        ("POST", "/v1/endpoints"): ML,
        ("GET", "/v1/endpoints/{name}"): only("ml-engineer", "data-engineer", "viewer"),
        ("PATCH", "/v1/endpoints/{name}"): ML,
        ("DELETE", "/v1/endpoints/{name}"): ML,
        ("POST", "/v1/endpoints/{name}:promote"): ML,
        ("POST", "/v1/endpoints/{name}:rollback"): ML,
        ("POST", "/v1/endpoints/{name}:predict"): PREDICTORS,
        # The Open Inference Protocol: health is public as /healthz is; models as :predict.
        ("GET", "/v2"): PUBLIC,
        ("GET", "/v2/health/live"): PUBLIC,
        ("GET", "/v2/health/ready"): PUBLIC,
        ("GET", "/v2/models/{name}"): PREDICTORS,
        ("GET", "/v2/models/{name}/ready"): PREDICTORS,
        ("GET", "/v2/models/{name}/versions/{version}"): PREDICTORS,
        ("GET", "/v2/models/{name}/versions/{version}/ready"): PREDICTORS,
        ("POST", "/v2/models/{name}/infer"): PREDICTORS,
        ("POST", "/v2/models/{name}/versions/{version}/infer"): PREDICTORS,
    },
}

# Not in the OpenAPI documents but served: Prometheus scrapes it without a token.
UNDOCUMENTED = {("GET", "/metrics"): PUBLIC}
