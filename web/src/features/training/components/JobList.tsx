import { Badge, Code, Progress, Stack, Table, Title } from "@mantine/core";
import { Link } from "react-router-dom";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useJobs, useQueue } from "../api/training";

const COLOURS: Record<string, string> = { succeeded: "green", failed: "red", running: "blue", queued: "gray", cancelled: "dark", paused: "yellow" };

export function JobList() {
  const jobs = useJobs();
  return (
    <Stack gap="xs">
      <Title order={3}>Runs</Title>
      <ProblemAlert error={jobs.error} />
      {jobs.isPending ? <Loading /> : null}
      {jobs.data && jobs.data.items.length === 0 ? <EmptyState title="No training runs">Pick a template above and start one.</EmptyState> : null}
      {jobs.data && jobs.data.items.length > 0 ? (
        <Table aria-label="Training runs" highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Run</Table.Th>
              <Table.Th>Model</Table.Th>
              <Table.Th>Template</Table.Th>
              <Table.Th>Team</Table.Th>
              <Table.Th>Status</Table.Th>
              <Table.Th>Epoch</Table.Th>
              <Table.Th>Accuracy</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {jobs.data.items.map((j) => (
              <Table.Tr key={j.id}>
                <Table.Td>
                  <Link to={`/training/${j.id}`}>{j.id.slice(0, 8)}</Link>
                </Table.Td>
                <Table.Td>{j.model_name}</Table.Td>
                <Table.Td>{j.template}</Table.Td>
                <Table.Td>{j.team}</Table.Td>
                <Table.Td>
                  <Badge color={COLOURS[j.status] ?? "gray"}>{j.status}</Badge>
                </Table.Td>
                <Table.Td>
                  {j.epoch}
                  {j.max_epochs ? <Progress value={(100 * j.epoch) / j.max_epochs} size="xs" /> : null}
                </Table.Td>
                <Table.Td>{typeof (j.metrics as Record<string, unknown>).accuracy === "number" ? ((j.metrics as Record<string, number>).accuracy ?? 0).toFixed(3) : "—"}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}

export function QueueView() {
  const queue = useQueue();
  return (
    <Stack gap="xs">
      <Title order={3}>Queue</Title>
      <ProblemAlert error={queue.error} />
      {queue.data ? <Code block>{JSON.stringify(queue.data, null, 2).slice(0, 3000)}</Code> : null}
    </Stack>
  );
}
