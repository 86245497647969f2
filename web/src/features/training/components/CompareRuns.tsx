import { MultiSelect, Select, Stack, Text, Title } from "@mantine/core";
import { useEffect, useMemo, useRef, useState } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import { EmptyState, ProblemAlert } from "@/components/ui/Problem";
import { useJobs, useRunHistories, type MetricPoint } from "../api/training";
import { alignRuns, metricNames } from "../compare";

const PALETTE = ["#f76707", "#1c7ed6", "#2f9e44", "#ae3ec9", "#e03131", "#0c8599"];

function Chart({ labels, columns, metric }: { labels: string[]; columns: ReturnType<typeof alignRuns>; metric: string }) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const key = labels.join("|");
  useEffect(() => {
    if (!box.current) return;
    plot.current = new uPlot(
      {
        width: 640,
        height: 260,
        scales: { x: { time: false } },
        axes: [{ label: "epoch" }, { label: metric }],
        series: [{ label: "epoch" }, ...labels.map((label, i) => ({ label, stroke: PALETTE[i % PALETTE.length], width: 2, spanGaps: true }))],
      },
      columns as uPlot.AlignedData,
      box.current,
    );
    return () => plot.current?.destroy();
  }, [key, metric]); // eslint-disable-line react-hooks/exhaustive-deps
  useEffect(() => {
    plot.current?.setData(columns as uPlot.AlignedData);
  }, [columns]);
  return <div ref={box} data-testid="compare-chart" role="img" aria-label={`${metric} by epoch for ${labels.length} runs`} />;
}

/** Several runs' epoch metrics on one chart: pick the runs and the metric. */
export default function CompareRuns() {
  const jobs = useJobs();
  const runs = (jobs.data?.items ?? []).filter((j) => j.kind !== "search");
  const [picked, setPicked] = useState<string[] | null>(null);
  const chosen = picked ?? runs.filter((j) => j.epoch > 0).slice(0, 3).map((j) => j.id);
  const histories = useRunHistories(chosen);
  const series = histories.map((h) => (h.data ?? []) as MetricPoint[]);
  const names = metricNames(series);
  const [metric, setMetric] = useState<string | null>(null);
  const shown = metric && names.includes(metric) ? metric : (names.find((n) => n === "loss") ?? names[0] ?? "loss");
  const columns = useMemo(() => alignRuns(series, shown), [JSON.stringify(series.map((s) => s.length)), shown]); // eslint-disable-line react-hooks/exhaustive-deps
  const error = histories.find((h) => h.error)?.error;
  return (
    <Stack gap="xs" data-testid="compare-runs">
      <Title order={3}>Compare runs</Title>
      <MultiSelect
        label="Runs to compare"
        data={runs.map((j) => ({ value: j.id, label: `${j.id.slice(0, 8)} · ${j.model_name} · ${j.status}` }))}
        value={chosen}
        onChange={setPicked}
        maxValues={6}
        searchable
        w={640}
      />
      <Select label="Metric" data={names.length ? names : [shown]} value={shown} onChange={setMetric} w={240} allowDeselect={false} />
      <ProblemAlert error={error} />
      {chosen.length === 0 ? (
        <EmptyState title="Nothing to compare yet">Runs appear here once they have finished an epoch; pick up to six.</EmptyState>
      ) : (
        <>
          <Chart labels={chosen.map((id) => id.slice(0, 8))} columns={columns} metric={shown} />
          <Text size="xs" c="dimmed" data-testid="compare-points">
            {columns[0].length} epochs across {chosen.length} runs
          </Text>
        </>
      )}
    </Stack>
  );
}
