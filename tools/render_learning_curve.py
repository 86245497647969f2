"""Write docs/active-learning.md: the learning curves of the selection strategies on the digits
(tests/support/learning_curve.py, the same experiment the learning-curve test checks).

    .venv/bin/python tools/render_learning_curve.py
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.learning_curve import BATCH, FIRST, ROUNDS, TEST, mean_curves  # noqa: E402

TARGET = 0.93
SEEDS = range(3)


def main() -> None:
    curves = mean_curves(SEEDS)
    sizes = curves[0].labels
    lines = [
        "# Active learning: labels needed by each selection strategy",
        "",
        "Written by `tools/render_learning_curve.py`; checked by",
        "`tests/unit/annotation/test_learning_curve.py`. Pool-based active learning on",
        f"scikit-learn's digits: {TEST} held-out digits for testing, the first {FIRST} labels",
        f"drawn at random (the same for every strategy), then {ROUNDS} batches of {BATCH} chosen",
        "by the strategy from the rest; a logistic regression is refitted after each batch. Test",
        f"accuracy, mean of seeds {SEEDS.start}–{SEEDS.stop - 1}. Strategies are those of a",
        "selection job (`POST /v1/projects/{id}/selections`, see `kiln_annotation.selection`).",
        "",
        "| strategy | labels to reach "
        + f"{TARGET:.0%}"
        + " | "
        + " | ".join(str(n) for n in sizes)
        + " |",
        "|---|---|" + "---|" * len(sizes),
    ]
    for c in curves:
        reach = c.labels_to_reach(TARGET)
        lines.append(
            f"| {c.strategy} | {reach if reach is not None else 'not reached'} | "
            + " | ".join(f"{a:.3f}" for a in c.accuracy)
            + " |"
        )
    out = REPO / "docs" / "active-learning.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
