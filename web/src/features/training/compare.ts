// Pure helpers of the training pages: several runs' metric histories on one x axis, and a
// search's trials ranked by its target metric.
import type { MetricPoint } from "./api/training";

/** The value of ``metric`` in a point: epoch points may carry it as ``val_<m>`` or ``train_<m>``. */
export function metricOf(point: MetricPoint, metric: string): number | null {
  const m = point.metrics as Record<string, unknown>;
  for (const key of [metric, `val_${metric}`, `train_${metric}`]) {
    const v = m[key];
    if (typeof v === "number" && Number.isFinite(v)) return v;
  }
  return null;
}

/** uPlot's columns for several runs: the union of their epochs, each run's value or null. */
export function alignRuns(runs: MetricPoint[][], metric: string): [number[], ...(number | null)[][]] {
  const epochs = [...new Set(runs.flatMap((points) => points.map((p) => p.epoch)))].sort((a, b) => a - b);
  const columns = runs.map((points) => {
    const byEpoch = new Map<number, number>();
    for (const p of points) {
      const v = metricOf(p, metric);
      if (v !== null) byEpoch.set(p.epoch, v); // the epoch's last point wins
    }
    return epochs.map((e) => byEpoch.get(e) ?? null);
  });
  return [epochs, ...columns];
}

/** Every metric name the runs' points carry (without the val_/train_ prefixes), sorted. */
export function metricNames(runs: MetricPoint[][]): string[] {
  const names = new Set<string>();
  for (const points of runs) {
    for (const p of points) {
      for (const key of Object.keys(p.metrics as Record<string, unknown>)) names.add(key.replace(/^(val|train)_/, ""));
    }
  }
  return [...names].sort();
}

export interface Trial {
  id: string;
  status: string;
  params: Record<string, unknown>;
  metrics: Record<string, unknown>;
}

/** Trials best first by ``target`` (maximize or minimize), ties by id as the training service
 * ranks them (so its best trial comes first); trials without the metric come last. */
export function rankTrials<T extends Trial>(trials: T[], target: string, direction: string): T[] {
  const score = (t: T) => {
    const v = t.metrics[target];
    return typeof v === "number" && Number.isFinite(v) ? v : null;
  };
  return [...trials].sort((a, b) => {
    const x = score(a);
    const y = score(b);
    if (x === null || y === null) return x === null ? (y === null ? a.id.localeCompare(b.id) : 1) : -1;
    return (direction === "minimize" ? x - y : y - x) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  });
}
