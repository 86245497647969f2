import { describe, expect, it } from "vitest";
import { changed, defaults, validate, type Template } from "./params";

const template: Template = {
  name: "image-cnn",
  task: "image-classification",
  description: "",
  params: {
    epochs: { type: "int", default: 10, min: 1, max: 1000, choices: null, log: false, description: "" },
    lr: { type: "float", default: 0.003, min: 1e-6, max: 1, choices: null, log: true, description: "" },
    optimizer: { type: "choice", default: "adamw", min: null, max: null, choices: ["adamw", "sgd"], log: false, description: "" },
  },
};

describe("template parameters", () => {
  it("starts from the defaults, which are valid", () => {
    const values = defaults(template);
    expect(values).toEqual({ epochs: 10, lr: 0.003, optimizer: "adamw" });
    expect(validate(template, values)).toEqual({});
  });

  it("names each out-of-range or ill-typed field", () => {
    const problems = validate(template, { epochs: 2.5, lr: 3, optimizer: "rmsprop" });
    expect(problems).toEqual({
      epochs: "a whole number is required",
      lr: "at most 1",
      optimizer: "pick one of the choices",
    });
    expect(validate(template, { epochs: 0, lr: Number.NaN, optimizer: "sgd" })).toEqual({
      epochs: "at least 1",
      lr: "a number is required",
    });
  });

  it("sends only what differs from the defaults", () => {
    expect(changed(template, { epochs: 3, lr: 0.003, optimizer: "adamw" })).toEqual({ epochs: 3 });
  });
});
