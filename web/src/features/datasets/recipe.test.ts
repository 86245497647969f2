import { describe, expect, it } from "vitest";
import { buildRecipe } from "./recipe";

const base = { steps: [], rotateDegrees: 15, copiesPerItem: 2, seed: 7, message: "more" };

describe("augmentation recipe form", () => {
  it("builds ordered steps with probabilities and the rotation range", () => {
    const { body, problems } = buildRecipe({
      ...base,
      steps: [
        { strategy: "horizontal_flip", probability: 0.5 },
        { strategy: "rotate", probability: 1 },
      ],
    });
    expect(problems).toEqual([]);
    expect(body).toEqual({
      recipe: {
        copies_per_item: 2,
        steps: [
          { strategy: "horizontal_flip", probability: 0.5 },
          { strategy: "rotate", probability: 1, params: { degrees: [-15, 15] } },
        ],
      },
      seed: 7,
      message: "more",
    });
  });
  it("refuses an empty recipe and out-of-range fields before sending", () => {
    expect(buildRecipe(base).problems).toEqual(["pick at least one step"]);
    const bad = buildRecipe({ ...base, steps: [{ strategy: "grayscale", probability: 2 }], copiesPerItem: 0, seed: -1 });
    expect(bad.body).toBeNull();
    expect(bad.problems).toHaveLength(3);
  });
});
