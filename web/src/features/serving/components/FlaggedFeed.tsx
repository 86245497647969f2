import { Badge, Stack, Table, Text, Title } from "@mantine/core";
import { useQueries, useQuery } from "@tanstack/react-query";
import { AuthedImage } from "@/components/ui/AuthedImage";
import { ProblemAlert } from "@/components/ui/Problem";
import { api, data } from "@/lib/api-client";

interface FlaggedTask {
  id: string;
  project: string;
  datasetId: string;
  status: string;
  items: { item_id: string; blob: string }[];
  prelabels: Record<string, unknown> | null;
}

/** What the model said about a flagged input, from the task's pre-label suggestion. */
function suggestion(prelabels: Record<string, unknown> | null, itemId: string): string {
  const labels = prelabels?.[itemId];
  if (!Array.isArray(labels) || labels.length === 0) return "—";
  const first = labels[0] as { label?: unknown; score?: unknown; confidence?: unknown };
  const score = typeof first.score === "number" ? first.score : typeof first.confidence === "number" ? first.confidence : null;
  return `${String(first.label ?? "?")}${score !== null ? ` (${(score * 100).toFixed(0)} %)` : ""}`;
}

/** Predictions the serving layer flagged (under the confidence threshold): their inputs come
 * back to the model's dataset as an active-learning version, whose tasks are listed here. */
export function FlaggedFeed() {
  const projects = useQuery({
    queryKey: ["projects"],
    queryFn: async () => (await data(api.annotation.GET("/v1/projects", {}))) as unknown as { id: string; name: string; dataset_id: string }[],
    refetchInterval: 10_000,
  });
  const tasks = useQueries({
    queries: (projects.data ?? []).map((p) => ({
      queryKey: ["projects", p.id, "tasks", "flagged"],
      queryFn: async () => {
        const page = (await data(api.annotation.GET("/v1/projects/{project_id}/tasks", { params: { path: { project_id: p.id }, query: { limit: 200 } } }))) as unknown as {
          items: { id: string; source: string; status: string; items: { item_id: string; blob: string }[]; prelabels: Record<string, unknown> | null }[];
        };
        return page.items
          .filter((t) => t.source === "active-learning")
          .map((t): FlaggedTask => ({ id: t.id, project: p.name, datasetId: p.dataset_id, status: t.status, items: t.items, prelabels: t.prelabels }));
      },
      refetchInterval: 10_000,
    })),
  });
  const feed = tasks.flatMap((t) => t.data ?? []).slice(0, 30);
  const error = projects.error ?? tasks.find((t) => t.error)?.error;
  return (
    <Stack gap="xs">
      <Title order={4}>Flagged predictions back in labelling</Title>
      <ProblemAlert error={error} />
      {feed.length === 0 ? (
        <Text size="sm" c="dimmed" data-testid="flagged-empty">
          No flagged prediction has reached labelling yet. Answers under the endpoint's confidence threshold are stored and come back as tasks of the model's dataset.
        </Text>
      ) : (
        <Table aria-label="Flagged predictions" data-testid="flagged-feed">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Input</Table.Th>
              <Table.Th>Project</Table.Th>
              <Table.Th>Model said</Table.Th>
              <Table.Th>Task</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {feed.flatMap((t) =>
              t.items.map((it) => (
                <Table.Tr key={`${t.id}-${it.item_id}`}>
                  <Table.Td>
                    <AuthedImage url={`/api/dataset/v1/datasets/${encodeURIComponent(t.datasetId)}/blobs/${it.blob}/thumbnail?size=128`} alt={it.item_id} size={48} />
                  </Table.Td>
                  <Table.Td>{t.project}</Table.Td>
                  <Table.Td>{suggestion(t.prelabels, it.item_id)}</Table.Td>
                  <Table.Td>
                    <Badge variant="light">{t.status}</Badge>
                  </Table.Td>
                </Table.Tr>
              )),
            )}
          </Table.Tbody>
        </Table>
      )}
    </Stack>
  );
}
