// The augmentation form's state to the dataset service's recipe (steps run in order, each with
// its own probability; parameters left out take the service's defaults).
import type { components } from "@/lib/api/dataset";

export type AugmentRequest = components["schemas"]["AugmentRequest"];

export const STRATEGIES = [
  "horizontal_flip",
  "vertical_flip",
  "rotate",
  "random_crop",
  "colour_jitter",
  "gaussian_blur",
  "gaussian_noise",
  "grayscale",
  "cutout",
  "jpeg_quality",
] as const;
export type Strategy = (typeof STRATEGIES)[number];

export interface RecipeForm {
  steps: { strategy: Strategy; probability: number }[];
  rotateDegrees: number;
  copiesPerItem: number;
  seed: number;
  message: string;
}

/** The request body; problems the form can see before the server does come back as text. */
export function buildRecipe(form: RecipeForm): { body: AugmentRequest | null; problems: string[] } {
  const problems: string[] = [];
  if (form.steps.length === 0) problems.push("pick at least one step");
  for (const s of form.steps) {
    if (!(s.probability >= 0 && s.probability <= 1)) problems.push(`${s.strategy}: probability must be between 0 and 1`);
  }
  if (!Number.isInteger(form.copiesPerItem) || form.copiesPerItem < 1 || form.copiesPerItem > 100) problems.push("copies per item: 1 to 100");
  if (!Number.isInteger(form.seed) || form.seed < 0) problems.push("seed: a whole number ≥ 0");
  if (Math.abs(form.rotateDegrees) > 360) problems.push("rotation: at most 360 degrees");
  if (problems.length) return { body: null, problems };
  const steps = form.steps.map((s) =>
    s.strategy === "rotate"
      ? { strategy: s.strategy, probability: s.probability, params: { degrees: [-Math.abs(form.rotateDegrees), Math.abs(form.rotateDegrees)] } }
      : { strategy: s.strategy, probability: s.probability },
  );
  return {
    body: { recipe: { copies_per_item: form.copiesPerItem, steps } as AugmentRequest["recipe"], seed: form.seed, message: form.message },
    problems: [],
  };
}
