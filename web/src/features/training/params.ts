// A template's typed, ranged hyperparameters turned into form fields and checked before submit
// (the training service checks them again).

export interface ParamSpec {
  type: "int" | "float" | "choice" | "bool" | string;
  default: unknown;
  min: number | null;
  max: number | null;
  choices: unknown[] | null;
  log: boolean;
  description: string;
}

export interface Template {
  name: string;
  task: string;
  description: string;
  params: Record<string, ParamSpec>;
}

export type ParamValues = Record<string, string | number | boolean>;

export function defaults(template: Template): ParamValues {
  const values: ParamValues = {};
  for (const [name, spec] of Object.entries(template.params)) {
    const value = spec.default;
    values[name] =
      typeof value === "number" || typeof value === "boolean" || typeof value === "string"
        ? value
        : "";
  }
  return values;
}

/** The problems of each field (empty when the values may be submitted). */
export function validate(template: Template, values: ParamValues): Record<string, string> {
  const problems: Record<string, string> = {};
  for (const [name, spec] of Object.entries(template.params)) {
    const value = values[name];
    if (spec.type === "int" || spec.type === "float") {
      if (typeof value !== "number" || Number.isNaN(value)) {
        problems[name] = "a number is required";
      } else if (spec.type === "int" && !Number.isInteger(value)) {
        problems[name] = "a whole number is required";
      } else if (spec.min !== null && value < spec.min) {
        problems[name] = `at least ${spec.min}`;
      } else if (spec.max !== null && value > spec.max) {
        problems[name] = `at most ${spec.max}`;
      }
    } else if (spec.type === "choice") {
      if (!(spec.choices ?? []).includes(value)) problems[name] = "pick one of the choices";
    }
  }
  return problems;
}

/** Only the values that differ from the template's defaults are sent. */
export function changed(template: Template, values: ParamValues): ParamValues {
  const base = defaults(template);
  return Object.fromEntries(Object.entries(values).filter(([k, v]) => base[k] !== v));
}
