import { Group } from "@mantine/core";
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { columns, type Measure, type Sample } from "../canary";

function Plot({ history, measure, label }: { history: Sample[]; measure: Measure; label: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  useEffect(() => {
    if (!box.current) return;
    plot.current = new uPlot(
      {
        width: 340,
        height: 200,
        // A single sample still gets a minute of time axis, and rates start at 0.
        scales: {
          x: { time: true, range: (_u, min, max) => (max - min < 60 ? [min - 30, max + 30] : [min, max]) },
          y: { range: (_u, _min, max) => [0, measure === "confidence" ? 1 : Math.max(measure === "errorRate" ? 5 : 10, max * 1.2)] },
        },
        axes: [{}, { label }],
        series: [{}, { label: "candidate", stroke: "#f76707", width: 2, spanGaps: true }, { label: "stable", stroke: "#1c7ed6", width: 2, spanGaps: true }],
      },
      [[], [], []],
      box.current,
    );
    return () => plot.current?.destroy();
  }, [label, measure]);
  useEffect(() => {
    plot.current?.setData(columns(history, measure));
  }, [history, measure]);
  return <div ref={box} role="img" aria-label={`${label} of candidate and stable over time`} data-testid={`canary-${measure}`} />;
}

/** The canary's error rate, p99 latency and mean confidence per version, one point per
 * analysis answer. */
export default function CanaryChart({ history }: { history: Sample[] }) {
  return (
    <Group align="start" gap="md">
      <Plot history={history} measure="errorRate" label="error rate (%)" />
      <Plot history={history} measure="p99" label="p99 latency (ms)" />
      <Plot history={history} measure="confidence" label="mean confidence" />
    </Group>
  );
}
