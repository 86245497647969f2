import { Badge, Stack, Table, Text, Title } from "@mantine/core";
import { Link } from "react-router-dom";
import { EmptyState, ProblemAlert } from "@/components/ui/Problem";
import { useSearch, useSearches, type Job } from "../api/training";
import { rankTrials } from "../compare";

interface SearchSpec {
  target?: string;
  direction?: string;
  best_trial_id?: string | null;
  strategy?: string;
}

const specOf = (job: Job): SearchSpec => (job.search ?? {}) as SearchSpec;

/** The hyperparameter searches, newest first, with their target and best score so far. */
export function SearchList() {
  const searches = useSearches();
  const items = searches.data?.items ?? [];
  return (
    <Stack gap="xs">
      <Title order={3}>Hyperparameter searches</Title>
      <ProblemAlert error={searches.error} />
      {searches.data && items.length === 0 ? (
        <EmptyState title="No searches">An ML engineer starts one with POST /api/training/v1/searches (grid or random over a template's ranges); its trials are ranked here.</EmptyState>
      ) : null}
      {items.length ? (
        <Table aria-label="Hyperparameter searches">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Search</Table.Th>
              <Table.Th>Model</Table.Th>
              <Table.Th>Target</Table.Th>
              <Table.Th>Status</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {items.map((s) => (
              <Table.Tr key={s.id}>
                <Table.Td>
                  <Link to={`/training/${s.id}`}>{s.id.slice(0, 8)}</Link>
                </Table.Td>
                <Table.Td>{s.model_name}</Table.Td>
                <Table.Td>
                  {specOf(s).direction ?? "maximize"} {specOf(s).target ?? "?"}
                </Table.Td>
                <Table.Td>{s.status}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}

/** A search's trials ranked by its target metric (live while trials run); the best is marked. */
export function SearchRanking({ jobId }: { jobId: string }) {
  const search = useSearch(jobId, true);
  if (!search.data) return <ProblemAlert error={search.error} />;
  const spec = specOf(search.data.job);
  const target = spec.target ?? "accuracy";
  const ranked = rankTrials(
    search.data.trials.map((t) => ({ ...t, params: t.params as Record<string, unknown>, metrics: t.metrics as Record<string, unknown> })),
    target,
    spec.direction ?? "maximize",
  );
  // The searched hyperparameters only (the rest are the same for every trial).
  const space = Object.keys((spec as { space?: Record<string, unknown> }).space ?? {});
  const names = (space.length ? space : [...new Set(ranked.flatMap((t) => Object.keys(t.params)))]).sort();
  return (
    <Stack gap="xs">
      <Title order={4}>
        Trials ranked by {target} ({spec.direction ?? "maximize"})
      </Title>
      <Table aria-label="Trials ranked" data-testid="search-ranking">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>#</Table.Th>
            <Table.Th>Trial</Table.Th>
            {names.map((n) => (
              <Table.Th key={n}>{n}</Table.Th>
            ))}
            <Table.Th>{target}</Table.Th>
            <Table.Th>Status</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {ranked.map((t, i) => {
            const score = t.metrics[target];
            return (
              <Table.Tr key={t.id}>
                <Table.Td>{i + 1}</Table.Td>
                <Table.Td>
                  <Link to={`/training/${t.id}`}>{t.id.slice(0, 8)}</Link> {t.id === spec.best_trial_id ? <Badge color="green">best</Badge> : null}
                </Table.Td>
                {names.map((n) => (
                  <Table.Td key={n}>{JSON.stringify(t.params[n] ?? null)}</Table.Td>
                ))}
                <Table.Td>{typeof score === "number" ? score.toFixed(4) : "—"}</Table.Td>
                <Table.Td>{t.status}</Table.Td>
              </Table.Tr>
            );
          })}
        </Table.Tbody>
      </Table>
      {ranked.length === 0 ? <Text size="sm">No trials yet.</Text> : null}
    </Stack>
  );
}
