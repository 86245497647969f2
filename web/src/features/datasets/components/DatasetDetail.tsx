import { Button, Code, Group, Select, Stack, Table, Tabs, Text, Title } from "@mantine/core";
import { useState } from "react";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { raw } from "@/lib/api-client";
import { useAuth } from "@/lib/auth";
import { useDataset, useDiff, useStats, useVersions } from "../api/datasets";
import { ImportPanel } from "./ImportPanel";
import { ItemGrid } from "./ItemGrid";
import { AugmentPanel, QualityPanel } from "./QualityAndAugment";

async function download(url: string, name: string) {
  const blob = await (await raw(url)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  URL.revokeObjectURL(link.href);
}

export function DatasetDetail({ datasetId }: { datasetId: string }) {
  const dataset = useDataset(datasetId);
  const versions = useVersions(datasetId);
  const { can } = useAuth();
  const [chosen, setChosen] = useState<number | null>(null);
  const [against, setAgainst] = useState<string | null>(null);
  const list = versions.data?.items ?? [];
  const version = chosen ?? list[0]?.version ?? null;
  const current = list.find((v) => v.version === version);
  const stats = useStats(datasetId, version);
  const diff = useDiff(datasetId, version, against ? Number(against) : null);
  const classes = (current?.categories ?? []).map((c) => String((c as { name?: unknown }).name ?? ""));
  return (
    <Stack>
      <Title order={2}>{dataset.data?.name ?? "Dataset"}</Title>
      <ProblemAlert error={dataset.error ?? versions.error} />
      {dataset.data ? (
        <Text size="sm" c="dimmed">
          {dataset.data.task_type} · owner {dataset.data.owner} · {dataset.data.description}
        </Text>
      ) : null}
      {can("manageDatasets") ? <ImportPanel datasetId={datasetId} /> : null}
      {versions.isPending ? <Loading /> : null}
      {versions.data && list.length === 0 ? (
        <EmptyState title="No versions yet">Import an archive or upload images to make version 1.</EmptyState>
      ) : null}
      {list.length > 0 ? (
        <Table aria-label="Versions" highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Version</Table.Th>
              <Table.Th>Parent</Table.Th>
              <Table.Th>Items</Table.Th>
              <Table.Th>Labelled</Table.Th>
              <Table.Th>Lineage</Table.Th>
              <Table.Th>Message</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {list.map((v) => (
              <Table.Tr key={v.version} bg={v.version === version ? "orange.0" : undefined}>
                <Table.Td>v{v.version}</Table.Td>
                <Table.Td>{v.parent_version ? `v${v.parent_version}` : "—"}</Table.Td>
                <Table.Td>{v.item_count}</Table.Td>
                <Table.Td>{v.labelled_count}</Table.Td>
                <Table.Td>{String((v.lineage as { source?: unknown }).source ?? "")}</Table.Td>
                <Table.Td>{v.message}</Table.Td>
                <Table.Td>
                  <Group gap={4}>
                    <Button size="compact-xs" variant="light" onClick={() => setChosen(v.version)}>
                      Open
                    </Button>
                    <Button
                      size="compact-xs"
                      variant="subtle"
                      onClick={() =>
                        void download(
                          `/api/dataset/v1/datasets/${datasetId}/versions/${v.version}/export?format=coco`,
                          `v${v.version}-coco.zip`,
                        )
                      }
                    >
                      Export COCO
                    </Button>
                  </Group>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
      {version !== null ? (
        <Tabs defaultValue="items" keepMounted={false}>
          <Tabs.List>
            <Tabs.Tab value="items">Items of v{version}</Tabs.Tab>
            <Tabs.Tab value="stats">Stats</Tabs.Tab>
            <Tabs.Tab value="diff">Diff</Tabs.Tab>
            <Tabs.Tab value="quality">Quality</Tabs.Tab>
            {can("manageDatasets") ? <Tabs.Tab value="augment">Augment</Tabs.Tab> : null}
          </Tabs.List>
          <Tabs.Panel value="quality" pt="xs">
            {current ? <QualityPanel datasetId={datasetId} version={current} /> : null}
          </Tabs.Panel>
          <Tabs.Panel value="augment" pt="xs">
            <AugmentPanel datasetId={datasetId} version={version} />
          </Tabs.Panel>
          <Tabs.Panel value="items" pt="xs">
            <ItemGrid datasetId={datasetId} version={version} classes={classes} />
          </Tabs.Panel>
          <Tabs.Panel value="stats" pt="xs">
            <ProblemAlert error={stats.error} />
            {stats.data ? <Code block>{JSON.stringify(stats.data, null, 2)}</Code> : <Loading />}
          </Tabs.Panel>
          <Tabs.Panel value="diff" pt="xs">
            <Select
              label="Compare with"
              placeholder="another version"
              data={list.filter((v) => v.version !== version).map((v) => String(v.version))}
              value={against}
              onChange={setAgainst}
              w={200}
            />
            <ProblemAlert error={diff.error} />
            {diff.data ? (
              <Table aria-label="Diff" mt="xs">
                <Table.Tbody>
                  {Object.entries(diff.data).map(([k, v]) => (
                    <Table.Tr key={k}>
                      <Table.Td>{k}</Table.Td>
                      <Table.Td>{Array.isArray(v) ? `${v.length}: ${v.slice(0, 8).map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join(", ")}` : JSON.stringify(v)}</Table.Td>
                    </Table.Tr>
                  ))}
                </Table.Tbody>
              </Table>
            ) : null}
          </Tabs.Panel>
        </Tabs>
      ) : null}
    </Stack>
  );
}
