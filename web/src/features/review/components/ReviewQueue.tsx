import { Badge, Button, Card, Group, NumberInput, SimpleGrid, Stack, Table, Text, Textarea, Title } from "@mantine/core";
import { useState } from "react";
import { AuthedImage } from "@/components/ui/AuthedImage";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { LabelOverlay } from "@/features/datasets/components/ItemGrid";
import type { Item } from "@/features/datasets/api/datasets";
import type { Project, Task, TaskItem } from "@/features/labelling/api/tasks";
import { useAnnotators, useCommit, useOverlaps, useReview, useReviewQueue } from "../api/review";

function ReviewCard({ project, task }: { project: Project; task: Task }) {
  const review = useReview(project.id);
  const { can } = useAuth();
  const [comment, setComment] = useState("");
  const items = task.items as unknown as TaskItem[];
  const labels = (task.labels ?? {}) as Record<string, Item["labels"]>;
  return (
    <Card withBorder padding="sm" data-testid="review-card">
      <Stack gap="xs">
        <Text size="sm">
          Task {task.id.slice(0, 8)} · by {task.assignee ?? "?"} · version {task.dataset_version}
        </Text>
        <Group gap="xs">
          {items.slice(0, 4).map((it) => (
            <figure key={it.item_id} className="cell">
              <div className="thumb-box">
                <AuthedImage url={`/api/dataset/v1/datasets/${project.dataset_id}/blobs/${it.blob}/thumbnail?size=128`} alt={it.item_id} size={128} />
                <LabelOverlay item={{ ...it, labels: labels[it.item_id] ?? [], size_bytes: 0, media_type: it.media_type ?? "", metadata: {} } as Item} />
              </div>
              <figcaption>{(labels[it.item_id] ?? []).map((l) => l.label).join(", ") || "no labels"}</figcaption>
            </figure>
          ))}
        </Group>
        {can("review") ? (
          <>
        <Textarea label="Comment" value={comment} onChange={(e) => setComment(e.currentTarget.value)} autosize minRows={1} />
        <Group gap="xs">
          <Button size="xs" color="green" loading={review.isPending} onClick={() => review.mutate({ taskId: task.id, accept: true, comment })}>
            Accept
          </Button>
          <Button size="xs" color="red" variant="light" loading={review.isPending} onClick={() => review.mutate({ taskId: task.id, accept: false, comment })}>
            Reject
          </Button>
        </Group>
          </>
        ) : null}
        <ProblemAlert error={review.error} />
      </Stack>
    </Card>
  );
}

function Annotators({ projectId }: { projectId: string }) {
  const stats = useAnnotators(projectId);
  const rows = Array.isArray(stats.data) ? (stats.data as Record<string, unknown>[]) : ((stats.data as { items?: Record<string, unknown>[] } | undefined)?.items ?? []);
  if (!rows.length) return null;
  const columns = Object.keys(rows[0] ?? {});
  return (
    <Table aria-label="Annotator performance">
      <Table.Thead>
        <Table.Tr>
          {columns.map((c) => (
            <Table.Th key={c}>{c}</Table.Th>
          ))}
        </Table.Tr>
      </Table.Thead>
      <Table.Tbody>
        {rows.map((r, i) => (
          <Table.Tr key={i}>
            {columns.map((c) => (
              <Table.Td key={c}>{typeof r[c] === "number" ? Number(r[c]).toFixed(3).replace(/\.?0+$/, "") : String(r[c] ?? "")}</Table.Td>
            ))}
          </Table.Tr>
        ))}
      </Table.Tbody>
    </Table>
  );
}

/** Overlapping annotations (project overlap > 1): each annotator's labels on the same image,
 * side by side, with the group's agreement. */
function Overlaps({ project }: { project: Project }) {
  const groups = useOverlaps(project.id);
  const list = groups.data ?? [];
  return (
    <Stack gap="xs">
      <ProblemAlert error={groups.error} />
      {groups.data && list.length === 0 ? (
        <Text size="sm" c="dimmed">
          No item has been labelled by more than one annotator yet (a project with overlap above 1 gives each item to several people).
        </Text>
      ) : null}
      {list.slice(0, 20).map((g) => {
        const first = (g.items[0] ?? {}) as unknown as TaskItem;
        return (
          <Card withBorder padding="xs" key={g.group_id} data-testid="overlap-group">
            <Text size="sm">
              {first.item_id} · agreement{" "}
              <Badge color={g.agreement === null ? "gray" : g.agreement >= 0.8 ? "green" : g.agreement >= 0.5 ? "yellow" : "red"}>
                {g.agreement === null ? "—" : `${(g.agreement * 100).toFixed(0)} %`}
              </Badge>
            </Text>
            <Group gap="xs" align="start">
              {g.annotations.map((a) => {
                const labels = ((a.labels ?? {}) as Record<string, Item["labels"]>)[first.item_id] ?? [];
                return (
                  <figure key={a.task_id} className="cell">
                    <div className="thumb-box">
                      <AuthedImage url={`/api/dataset/v1/datasets/${project.dataset_id}/blobs/${first.blob}/thumbnail?size=128`} alt={`${first.item_id} by ${a.annotator ?? "?"}`} size={128} />
                      <LabelOverlay item={{ ...first, labels, size_bytes: 0, media_type: first.media_type ?? "", metadata: {} } as Item} />
                    </div>
                    <figcaption>
                      {a.annotator ?? "?"} ({a.status}): {labels.map((l) => l.label).join(", ") || "no labels"}
                    </figcaption>
                  </figure>
                );
              })}
            </Group>
          </Card>
        );
      })}
    </Stack>
  );
}

export function ReviewQueue({ project }: { project: Project }) {
  const queue = useReviewQueue(project.id);
  const commit = useCommit(project.id);
  const { can } = useAuth();
  const [version, setVersion] = useState<number | string>(1);
  return (
    <Stack>
      <Title order={3}>Review: {project.name}</Title>
      <ProblemAlert error={queue.error} />
      {queue.isPending ? <Loading /> : null}
      {queue.data && queue.data.items.length === 0 ? <EmptyState title="Nothing to review">Submitted tasks appear here.</EmptyState> : null}
      <SimpleGrid cols={2}>
        {(queue.data?.items ?? []).map((t) => (
          <ReviewCard key={t.id} project={project} task={t} />
        ))}
      </SimpleGrid>
      {can("manageDatasets") ? (
        <Group align="end">
          <NumberInput label="Dataset version" min={1} value={version} onChange={setVersion} w={140} />
          <Button onClick={() => commit.mutate(Number(version))} loading={commit.isPending}>
            Commit accepted labels
          </Button>
          {commit.data ? <Text size="sm" data-testid="committed">Committed.</Text> : null}
        </Group>
      ) : null}
      <ProblemAlert error={commit.error} />
      {can("viewAnnotators") ? (
        <>
          <Title order={4}>Annotators</Title>
          <Annotators projectId={project.id} />
          <Title order={4}>Overlapping annotations</Title>
          <Overlaps project={project} />
        </>
      ) : null}
    </Stack>
  );
}
