// The promotion gates of a model's policy checked for one version before anyone presses
// "promote" (the registry checks them again, and its answer is the one that counts).
import type { components } from "@/lib/api/registry";

export type Policy = components["schemas"]["PolicyPublic"];
export type ModelVersion = components["schemas"]["VersionPublic"];

export interface GateResult {
  gate: string;
  passed: boolean;
  detail: string;
}

const OPERATORS: Record<string, (a: number, b: number) => boolean> = {
  ">=": (a, b) => a >= b,
  ">": (a, b) => a > b,
  "<=": (a, b) => a <= b,
  "<": (a, b) => a < b,
};

function metric(version: ModelVersion, name: string): number | undefined {
  const value = (version.metrics as Record<string, unknown>)[name];
  return typeof value === "number" ? value : undefined;
}

export function gateResults(policy: Policy | undefined, alias: string, candidate: ModelVersion, production: ModelVersion | undefined): GateResult[] {
  if (!policy || !(policy.gated_aliases ?? []).includes(alias)) return [];
  const results: GateResult[] = (policy.metric_gates ?? []).map((gate) => {
    const have = metric(candidate, gate.metric);
    const check = OPERATORS[gate.op ?? ">="];
    const passed = have !== undefined && !!check && check(have, gate.value);
    return { gate: `${gate.metric} ${gate.op} ${gate.value}`, passed, detail: have === undefined ? "metric missing" : `has ${have.toFixed(4)}` };
  });
  if (!production || production.version_id === candidate.version_id) return results;
  for (const gate of policy.regression_gates ?? []) {
    const have = metric(candidate, gate.metric);
    const baseline = metric(production, gate.metric);
    if (baseline === undefined) continue;
    const name = `${gate.metric} drops at most ${gate.max_drop} from v${production.version}`;
    if (have === undefined) {
      results.push({ gate: name, passed: false, detail: "metric missing" });
    } else if (candidate.evaluation_split !== production.evaluation_split) {
      results.push({ gate: name, passed: false, detail: `not comparable: evaluated on ${candidate.evaluation_split}, production on ${production.evaluation_split}` });
    } else {
      const drop = (gate.higher_is_better ?? true) ? baseline - have : have - baseline;
      results.push({ gate: name, passed: drop <= gate.max_drop, detail: `${have.toFixed(4)} vs ${baseline.toFixed(4)}` });
    }
  }
  return results;
}
