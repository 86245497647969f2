import { Badge, Button, Group, List, Select, Stack, Table, Text, TextInput, Title } from "@mantine/core";
import { useState } from "react";
import { Link } from "react-router-dom";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { useAliases, useModelLog, useModels, useModelVersions, usePolicy, usePromote } from "../api/registry";
import { describe, summarise } from "../compression";
import { gateResults } from "../gates";
import { CompressPanel, ImportPanel } from "./CompressAndImport";

export function ModelList() {
  const models = useModels();
  return (
    <Stack>
      <Title order={2}>Registry</Title>
      <ProblemAlert error={models.error} />
      {models.isPending ? <Loading /> : null}
      {models.data && models.data.items.length === 0 ? <EmptyState title="No models yet">A successful training run registers its model here.</EmptyState> : null}
      {models.data && models.data.items.length > 0 ? (
        <Table aria-label="Models" highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Model</Table.Th>
              <Table.Th>Latest</Table.Th>
              <Table.Th>Aliases</Table.Th>
              <Table.Th>Task</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {models.data.items.map((m) => (
              <Table.Tr key={m.id}>
                <Table.Td>
                  <Link to={`/registry/${encodeURIComponent(m.name)}`}>{m.name}</Link>
                </Table.Td>
                <Table.Td>{m.latest_version ? `v${m.latest_version}` : "—"}</Table.Td>
                <Table.Td>
                  {Object.entries(m.aliases as Record<string, unknown>).map(([a, v]) => (
                    <Badge key={a} mr={4} variant="light">
                      {a} → v{String(v)}
                    </Badge>
                  ))}
                </Table.Td>
                <Table.Td>{m.task_type ?? ""}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}

export function ModelDetail({ name }: { name: string }) {
  const versions = useModelVersions(name);
  const aliases = useAliases(name);
  const policy = usePolicy(name);
  const log = useModelLog(name);
  const promote = usePromote(name);
  const { can } = useAuth();
  const [alias, setAlias] = useState<string | null>("production");
  const [chosen, setChosen] = useState<string | null>(null);
  const [reason, setReason] = useState("");
  const list = versions.data?.items ?? [];
  const candidate = list.find((v) => String(v.version) === (chosen ?? String(list[0]?.version ?? "")));
  const productionVersion = aliases.data?.find((a) => a.alias === "production")?.version;
  const production = list.find((v) => v.version === productionVersion);
  const gates = candidate ? gateResults(policy.data, alias ?? "", candidate, production) : [];
  const blocked = gates.some((g) => !g.passed);
  return (
    <Stack>
      <Title order={2}>{name}</Title>
      <ProblemAlert error={versions.error ?? aliases.error ?? policy.error} />
      <Table aria-label="Versions">
        <Table.Thead>
          <Table.Tr>
            <Table.Th>Version</Table.Th>
            <Table.Th>Status</Table.Th>
            <Table.Th>Aliases</Table.Th>
            <Table.Th>Metrics</Table.Th>
            <Table.Th>Lineage</Table.Th>
            <Table.Th>Compression</Table.Th>
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {list.map((v) => (
            <Table.Tr key={v.version_id}>
              <Table.Td>v{v.version}</Table.Td>
              <Table.Td>{v.status}</Table.Td>
              <Table.Td>{v.aliases.join(", ")}</Table.Td>
              <Table.Td>
                {Object.entries(v.metrics as Record<string, unknown>)
                  .filter(([, x]) => typeof x === "number")
                  .slice(0, 4)
                  .map(([k, x]) => `${k} ${(x as number).toFixed(3)}`)
                  .join(" · ")}
              </Table.Td>
              <Table.Td>
                {Object.entries(v.lineage as Record<string, unknown>)
                  .filter(([, x]) => typeof x === "string" || typeof x === "number")
                  .slice(0, 4)
                  .map(([k, x]) => `${k}: ${String(x).slice(0, 12)}`)
                  .join(" → ")}
              </Table.Td>
              <Table.Td>
                {v.compression && Object.keys(v.compression).length
                  ? describe(
                      summarise(
                        v.compression as Record<string, unknown>,
                        (list.find((p) => p.version === Number((v.compression as Record<string, unknown>).parent_version))?.metrics ?? {}) as Record<string, unknown>,
                        v.metrics as Record<string, unknown>,
                      ),
                    )
                  : ""}
              </Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
      {list.length === 0 && versions.data ? <EmptyState title="No versions">Train a model with this name, or import a TorchScript file.</EmptyState> : null}
      {can("promote") && list.length > 0 ? (
        <Stack gap="xs" className="panel">
          <Title order={4}>Promote</Title>
          <Group align="end">
            <Select label="Version" data={list.map((v) => String(v.version))} value={chosen ?? String(list[0]?.version ?? "")} onChange={setChosen} w={120} />
            <Select label="Alias" data={["production", "canary", "staging"]} value={alias} onChange={setAlias} w={160} />
            <TextInput label="Reason" value={reason} onChange={(e) => setReason(e.currentTarget.value)} w={260} />
            <Button
              color={blocked ? "red" : "green"}
              disabled={blocked || !candidate}
              loading={promote.isPending}
              onClick={() => candidate && alias && promote.mutate({ alias, version: candidate.version, reason })}
            >
              Promote
            </Button>
          </Group>
          <List size="sm" aria-label="Gates" data-testid="gates">
            {gates.length === 0 ? <List.Item>No gates guard this alias.</List.Item> : null}
            {gates.map((g) => (
              <List.Item key={g.gate} c={g.passed ? "green" : "red"}>
                {g.passed ? "passes" : "fails"}: {g.gate} ({g.detail})
              </List.Item>
            ))}
          </List>
          <ProblemAlert error={promote.error} />
          {promote.data ? <Text size="sm" data-testid="promoted">v{promote.data.version} is now {alias}.</Text> : null}
        </Stack>
      ) : null}
      {can("promote") && list.length > 0 ? <CompressPanel name={name} versions={list} /> : null}
      {can("promote") ? <ImportPanel name={name} /> : null}
      <Title order={4}>Operation log</Title>
      <Table aria-label="Operation log">
        <Table.Tbody>
          {(log.data?.items ?? []).map((op) => (
            <Table.Tr key={op.id}>
              <Table.Td>{new Date(op.at).toLocaleString()}</Table.Td>
              <Table.Td>{op.action}</Table.Td>
              <Table.Td>{op.version ? `v${op.version}` : ""}</Table.Td>
              <Table.Td>{op.actor}</Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Stack>
  );
}
