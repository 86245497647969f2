import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { MetricPoint } from "../api/training";

/** Each metric of the step points against the step, redrawn as points arrive. */
export function LossChart({ points, metric = "loss" }: { points: MetricPoint[]; metric?: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  // Step points carry "loss", epoch points "train_loss": one curve of both, by step.
  const value = (p: MetricPoint) => {
    const m = p.metrics as Record<string, unknown>;
    const v = m[metric] ?? m[`train_${metric}`];
    return typeof v === "number" ? v : null;
  };
  const series = points.filter((p) => value(p) !== null);
  const steps = series.map((p) => p.step);
  const values = series.map(value);
  useEffect(() => {
    if (!box.current) return;
    plot.current = new uPlot(
      {
        width: 640,
        height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "step" }, { label: metric }],
        series: [{ label: "step" }, { label: metric, stroke: "#f76707", width: 2 }],
      },
      [[], []],
      box.current,
    );
    return () => plot.current?.destroy();
  }, [metric]);
  useEffect(() => {
    plot.current?.setData([steps, values]);
  }, [steps.length]); // eslint-disable-line react-hooks/exhaustive-deps
  return (
    <div>
      <div ref={box} data-testid={`chart-${metric}`} aria-label={`${metric} by step`} role="img" />
      <span data-testid={`points-${metric}`} className="visually-hidden">
        {series.length}
      </span>
    </div>
  );
}
