import { Badge, Button, Checkbox, Group, List, NumberInput, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useQueryClient } from "@tanstack/react-query";
import { useEffect, useState } from "react";
import { AuthedImage } from "@/components/ui/AuthedImage";
import { Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { thumbnailUrl, useJob, useQuality, useVersionJob, type Version } from "../api/datasets";
import { buildRecipe, STRATEGIES, type Strategy } from "../recipe";

/** Follow a version job; when it ends the dataset's queries are refreshed. */
function useFollowed(jobId: string | null, datasetId: string) {
  const job = useJob(jobId);
  const client = useQueryClient();
  const status = job.data?.status;
  useEffect(() => {
    if (status === "succeeded") void client.invalidateQueries({ queryKey: ["datasets", datasetId] });
  }, [status, client, datasetId]);
  return job;
}

/** The version's quality report: its summary and counts, near-duplicates side by side. */
export function QualityPanel({ datasetId, version }: { datasetId: string; version: Version }) {
  const { can } = useAuth();
  const evaluate = useVersionJob(datasetId, version.version, "quality");
  const job = useFollowed(evaluate.data?.job_id ?? null, datasetId);
  const report = useQuality(datasetId, version.version, version.has_quality_report);
  const running = evaluate.isPending || job.data?.status === "queued" || job.data?.status === "running";
  return (
    <Stack gap="xs" data-testid="quality">
      <Group>
        {can("manageDatasets") ? (
          <Button size="xs" variant="light" onClick={() => evaluate.mutate(undefined)} loading={running}>
            {version.has_quality_report ? "Evaluate again" : "Evaluate quality"}
          </Button>
        ) : null}
        {job.data ? <Text size="sm">quality job {job.data.status}</Text> : null}
      </Group>
      <ProblemAlert error={evaluate.error ?? job.error ?? report.error} />
      {!version.has_quality_report && !running ? (
        <Text size="sm" c="dimmed">
          No quality report for v{version.version} yet{can("manageDatasets") ? ": evaluate one (unreadable images, duplicates, labels out of bounds, imbalance)." : "; a data engineer can evaluate one."}
        </Text>
      ) : null}
      {version.has_quality_report && !report.data ? <Loading /> : null}
      {report.data ? <Report datasetId={datasetId} version={version.version} report={report.data} /> : null}
    </Stack>
  );
}

function Report({ datasetId, version, report }: { datasetId: string; version: number; report: NonNullable<ReturnType<typeof useQuality>["data"]> }) {
  return (
    <Stack gap="xs">
      <List size="sm" data-testid="quality-summary">
        {report.summary.map((line, i) => (
          <List.Item key={i}>{line}</List.Item>
        ))}
      </List>
      <Group gap="xs">
        {Object.entries(report.counts).map(([k, v]) => (
          <Badge key={k} variant="light" color={v > 0 && k !== "items" ? "orange" : "gray"}>
            {k.replace(/_/g, " ")}: {v}
          </Badge>
        ))}
        {report.imbalance_ratio !== null ? <Badge color={report.imbalanced ? "red" : "gray"}>imbalance {report.imbalance_ratio.toFixed(1)}×</Badge> : null}
      </Group>
      <Title order={5}>Near-duplicates (hash distance ≤ {report.near_duplicate_threshold})</Title>
      {report.near_duplicates.length === 0 ? <Text size="sm">None found.</Text> : null}
      {report.near_duplicates.map((group, i) => (
        <Group key={i} gap="xs" align="start" className="panel" data-testid="near-duplicates">
          {group.item_ids.map((id) => (
            <figure key={id} className="cell">
              <div className="thumb-box">
                <AuthedImage url={thumbnailUrl(datasetId, version, id)} alt={id} size={128} />
              </div>
              <figcaption title={id}>{id}</figcaption>
            </figure>
          ))}
          <Text size="xs" c="dimmed">
            distance ≤ {group.max_distance}
          </Text>
        </Group>
      ))}
      {report.exact_duplicates.length ? (
        <>
          <Title order={5}>Exact duplicates</Title>
          <List size="sm">
            {report.exact_duplicates.map((g, i) => (
              <List.Item key={i}>{g.item_ids.join(" = ")}</List.Item>
            ))}
          </List>
        </>
      ) : null}
      {report.out_of_bounds.length ? (
        <Table aria-label="Labels out of bounds">
          <Table.Tbody>
            {report.out_of_bounds.map((o, i) => (
              <Table.Tr key={i}>
                <Table.Td>{o.item_id}</Table.Td>
                <Table.Td>
                  label {o.label_index} ({o.kind})
                </Table.Td>
                <Table.Td>{o.detail}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}

/** A derived, augmented version from a recipe: which steps, how likely each, how many copies. */
export function AugmentPanel({ datasetId, version }: { datasetId: string; version: number }) {
  const start = useVersionJob(datasetId, version, "augment");
  const job = useFollowed(start.data?.job_id ?? null, datasetId);
  const [chosen, setChosen] = useState<Strategy[]>(["horizontal_flip"]);
  const [probability, setProbability] = useState<Record<string, number>>({});
  const [rotateDegrees, setRotateDegrees] = useState(15);
  const [copies, setCopies] = useState(1);
  const [seed, setSeed] = useState(0);
  const [message, setMessage] = useState("");
  const { body, problems } = buildRecipe({
    steps: STRATEGIES.filter((s) => chosen.includes(s)).map((s) => ({ strategy: s, probability: probability[s] ?? 0.5 })),
    rotateDegrees,
    copiesPerItem: copies,
    seed,
    message: message || `augmented from v${version}`,
  });
  const result = (job.data?.result ?? {}) as Record<string, unknown>;
  return (
    <Stack gap="xs" data-testid="augment">
      <Text size="sm">Steps run in this order, each on a copy with its own probability; labels move with the pixels.</Text>
      <Table aria-label="Augmentation steps">
        <Table.Tbody>
          {STRATEGIES.map((s) => (
            <Table.Tr key={s}>
              <Table.Td w={220}>
                <Checkbox label={s.replace(/_/g, " ")} checked={chosen.includes(s)} onChange={(e) => setChosen(e.currentTarget.checked ? [...chosen, s] : chosen.filter((c) => c !== s))} />
              </Table.Td>
              <Table.Td w={160}>
                <NumberInput
                  size="xs"
                  aria-label={`${s} probability`}
                  min={0}
                  max={1}
                  step={0.1}
                  decimalScale={2}
                  disabled={!chosen.includes(s)}
                  value={probability[s] ?? 0.5}
                  onChange={(v) => setProbability({ ...probability, [s]: Number(v) })}
                />
              </Table.Td>
              <Table.Td>
                {s === "rotate" ? (
                  <NumberInput size="xs" label="± degrees" min={0} max={360} value={rotateDegrees} onChange={(v) => setRotateDegrees(Number(v))} w={120} disabled={!chosen.includes(s)} />
                ) : null}
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      <Group align="end">
        <NumberInput label="Copies per item" min={1} max={100} value={copies} onChange={(v) => setCopies(Number(v))} w={140} />
        <NumberInput label="Seed" min={0} value={seed} onChange={(v) => setSeed(Number(v))} w={120} />
        <TextInput label="Message" placeholder={`augmented from v${version}`} value={message} onChange={(e) => setMessage(e.currentTarget.value)} w={260} />
        <Button onClick={() => body && start.mutate(body)} disabled={!body} loading={start.isPending || job.data?.status === "running" || job.data?.status === "queued"}>
          Augment v{version}
        </Button>
      </Group>
      {problems.length ? (
        <List size="xs" c="red">
          {problems.map((p) => (
            <List.Item key={p}>{p}</List.Item>
          ))}
        </List>
      ) : null}
      <ProblemAlert error={start.error ?? job.error} />
      {job.data ? (
        <Text size="sm" data-testid="augment-job">
          augmentation {job.data.status}
          {typeof result.version === "number" ? `: v${result.version}` : ""}
        </Text>
      ) : null}
    </Stack>
  );
}
