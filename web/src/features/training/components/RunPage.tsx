import { Badge, Button, Group, Stack, Table, Text, Title } from "@mantine/core";
import { Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { useEvaluation, useJobAction, useMetricStream, useTrainingJob } from "../api/training";
import { BadCases } from "./BadCases";
import { LossChart } from "./LossChart";
import { SearchRanking } from "./Searches";

function ConfusionMatrix({ evaluation }: { evaluation: Record<string, unknown> }) {
  const matrix = evaluation.confusion_matrix as number[][] | undefined;
  const labels = (evaluation.labels ?? evaluation.classes) as string[] | undefined;
  if (!Array.isArray(matrix)) return null;
  const peak = Math.max(1, ...matrix.flat());
  return (
    <table className="heatmap" aria-label="Confusion matrix">
      <tbody>
        {matrix.map((row, i) => (
          <tr key={i}>
            <th scope="row">{labels?.[i] ?? i}</th>
            {row.map((n, j) => (
              <td key={j} data-level={Math.round((n / peak) * 5)}>
                {n}
              </td>
            ))}
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function RunPage({ jobId }: { jobId: string }) {
  const job = useTrainingJob(jobId);
  const stream = useMetricStream(jobId);
  const action = useJobAction(jobId);
  const { can } = useAuth();
  const status = job.data?.status ?? stream.status;
  // A search's parent has no evaluation of its own: its trials have.
  const evaluation = useEvaluation(jobId, status === "succeeded" && job.data?.kind === "train");
  if (job.isPending) return <Loading />;
  return (
    <Stack>
      <Group justify="space-between">
        <Title order={2}>Run {jobId.slice(0, 8)}</Title>
        <Badge size="lg" data-testid="run-status">
          {status}
        </Badge>
      </Group>
      <ProblemAlert error={job.error ?? action.error} />
      {job.data?.error ? <ProblemAlert error={new Error(job.data.error)} /> : null}
      {job.data ? (
        <Text size="sm">
          {job.data.template} on {job.data.dataset_id.slice(0, 8)} v{job.data.dataset_version} · model {job.data.model_name} · step {job.data.step}, epoch {job.data.epoch}
        </Text>
      ) : null}
      {can("train") ? (
        <Group gap="xs">
          <Button size="xs" variant="default" onClick={() => action.mutate("pause")} disabled={status !== "running" && status !== "queued"}>
            Pause
          </Button>
          <Button size="xs" variant="default" onClick={() => action.mutate("resume")} disabled={status !== "paused"}>
            Resume
          </Button>
          <Button size="xs" color="red" variant="light" onClick={() => action.mutate("cancel")} disabled={["succeeded", "failed", "cancelled"].includes(status ?? "")}>
            Cancel
          </Button>
        </Group>
      ) : null}
      {job.data?.kind === "search" ? <SearchRanking jobId={jobId} /> : <LossChart points={stream.points} metric="loss" />}
      <Table aria-label="Final metrics">
        <Table.Tbody>
          {Object.entries((job.data?.metrics ?? {}) as Record<string, unknown>).map(([k, v]) => (
            <Table.Tr key={k}>
              <Table.Td>{k}</Table.Td>
              <Table.Td>{typeof v === "number" ? v.toFixed(4) : JSON.stringify(v)}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {evaluation.data ? (
        <>
          <Title order={4}>Evaluation</Title>
          <ConfusionMatrix evaluation={evaluation.data} />
        </>
      ) : null}
      {job.data && job.data.kind !== "search" && status === "succeeded" ? <BadCases job={job.data} /> : null}
    </Stack>
  );
}
