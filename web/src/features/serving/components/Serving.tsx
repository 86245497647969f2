import { Badge, Button, Code, Group, Progress, Stack, Table, Text, Textarea, Title } from "@mantine/core";
import { lazy, Suspense, useEffect, useState, type DragEvent } from "react";
import { Link } from "react-router-dom";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { useCanaryAction, useEndpoint, useEndpoints, usePredict } from "../api/serving";
import { appendSample, type Sample } from "../canary";
import { FlaggedFeed } from "./FlaggedFeed";

// uPlot loads with the canary chart, not with the first page.
const CanaryChart = lazy(() => import("./CanaryChart"));

export function EndpointList() {
  const { can } = useAuth();
  if (!can("viewServing")) {
    return (
      <Stack>
        <Title order={2}>Serving</Title>
        <EmptyState title="Not for your role">Endpoints are shown to viewers, data and ML engineers.</EmptyState>
      </Stack>
    );
  }
  return <Endpoints />;
}

function Endpoints() {
  const endpoints = useEndpoints();
  return (
    <Stack>
      <Title order={2}>Serving</Title>
      <ProblemAlert error={endpoints.error} />
      {endpoints.isPending ? <Loading /> : null}
      {endpoints.data && endpoints.data.length === 0 ? <EmptyState title="No endpoints">An ML engineer creates one that follows a model alias.</EmptyState> : null}
      {endpoints.data && endpoints.data.length > 0 ? (
        <Table aria-label="Endpoints" highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Endpoint</Table.Th>
              <Table.Th>Model</Table.Th>
              <Table.Th>Strategy</Table.Th>
              <Table.Th>Stable</Table.Th>
              <Table.Th>Candidate</Table.Th>
              <Table.Th>State</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {endpoints.data.map((e) => (
              <Table.Tr key={e.name}>
                <Table.Td>
                  <Link to={`/serving/${encodeURIComponent(e.name)}`}>{e.name}</Link>
                </Table.Td>
                <Table.Td>
                  {e.model_name}@{e.alias}
                </Table.Td>
                <Table.Td>{e.strategy}</Table.Td>
                <Table.Td>{e.stable ? `v${e.stable.version}` : "—"}</Table.Td>
                <Table.Td>{e.candidate ? `v${e.candidate.version}` : "—"}</Table.Td>
                <Table.Td>{e.state}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}

function TryIt({ name }: { name: string }) {
  const predict = usePredict(name);
  const [json, setJson] = useState("");
  const [over, setOver] = useState(false);
  const onDrop = (e: DragEvent<HTMLDivElement>) => {
    e.preventDefault();
    setOver(false);
    const file = e.dataTransfer.files[0];
    if (file) predict.mutate(file);
  };
  return (
    <Stack gap="xs">
      <Title order={4}>Try it</Title>
      <div
        className={over ? "dropzone dropzone-over" : "dropzone"}
        data-testid="dropzone"
        role="button"
        tabIndex={0}
        aria-label="Drop an image to predict"
        onDragOver={(e) => {
          e.preventDefault();
          setOver(true);
        }}
        onDragLeave={() => setOver(false)}
        onDrop={onDrop}
      >
        Drop an image here
      </div>
      <Textarea label="…or paste a JSON body" placeholder='{"inputs": ["<base64>"]}' value={json} onChange={(e) => setJson(e.currentTarget.value)} autosize minRows={2} />
      <Button size="xs" w={140} onClick={() => predict.mutate(json)} disabled={!json.trim()} loading={predict.isPending}>
        Send JSON
      </Button>
      <ProblemAlert error={predict.error} />
      {predict.data ? (
        <Stack gap={2} data-testid="answer">
          <Text size="sm">Answered by version {predict.data.version ?? "?"}</Text>
          <Code block>{JSON.stringify(predict.data.body, null, 2)}</Code>
        </Stack>
      ) : null}
    </Stack>
  );
}

export function EndpointDetail({ name }: { name: string }) {
  const endpoint = useEndpoint(name);
  const action = useCanaryAction(name);
  const { can } = useAuth();
  const e = endpoint.data;
  const traffic = (e?.traffic ?? {}) as Record<string, unknown>;
  // One sample of the canary's analysis per answer, for as long as the page is open.
  const [history, setHistory] = useState<{ candidate: string; samples: Sample[] }>({ candidate: "", samples: [] });
  const candidate = e?.candidate ?? null;
  useEffect(() => {
    if (!candidate) return;
    const at = (endpoint.dataUpdatedAt || Date.now()) / 1000;
    setHistory((h) => ({
      candidate: candidate.id,
      samples: appendSample(h.candidate === candidate.id ? h.samples : [], candidate.analysis as Record<string, unknown>, at),
    }));
  }, [candidate, endpoint.dataUpdatedAt]);
  const samples = candidate && history.candidate === candidate.id ? history.samples : [];
  const latest = samples[samples.length - 1];
  return (
    <Stack>
      <Title order={2}>{name}</Title>
      <ProblemAlert error={endpoint.error ?? action.error} />
      {endpoint.isPending ? <Loading /> : null}
      {e ? (
        <>
          <Text size="sm">
            {e.model_name}@{e.alias} · {e.strategy} · <Badge>{e.state}</Badge>
          </Text>
          <Text size="sm" data-testid="stable">
            stable {e.stable ? `v${e.stable.version} (${e.stable.state})` : "none yet"}
            {e.candidate ? ` · candidate v${e.candidate.version} (${e.candidate.state})` : ""}
          </Text>
          <Title order={4}>Traffic</Title>
          <Table aria-label="Traffic shares">
            <Table.Tbody>
              {Object.entries(traffic).map(([k, v]) => (
                <Table.Tr key={k}>
                  <Table.Td w={160}>{k}</Table.Td>
                  <Table.Td>{typeof v === "number" && v <= 1 ? <Progress value={v * 100} aria-label={`${k} share`} /> : JSON.stringify(v)}</Table.Td>
                  <Table.Td w={80}>{typeof v === "number" && v <= 1 ? `${Math.round(v * 100)} %` : ""}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
          {e.candidate ? (
            <Stack gap="xs">
              <Title order={4}>
                Canary v{e.candidate.version} against v{e.stable?.version ?? "?"}
              </Title>
              <Text size="sm" data-testid="canary-summary">
                step {latest?.step ?? 0} · candidate {latest?.candidateRequests ?? 0} requests, error rate{" "}
                {latest?.candidateErrorRate != null ? `${(latest.candidateErrorRate * 100).toFixed(1)} %` : "—"}, p99 {latest?.candidateP99 != null ? `${latest.candidateP99.toFixed(0)} ms` : "—"} · stable{" "}
                {latest?.stableRequests ?? 0} requests, error rate {latest?.stableErrorRate != null ? `${(latest.stableErrorRate * 100).toFixed(1)} %` : "—"}, p99{" "}
                {latest?.stableP99 != null ? `${latest.stableP99.toFixed(0)} ms` : "—"}
                {latest?.candidateConfidence != null && latest.stableConfidence != null
                  ? ` · mean confidence ${latest.candidateConfidence.toFixed(2)} vs ${latest.stableConfidence.toFixed(2)}`
                  : ""}
                {latest?.scoreShift != null ? ` · score shift (KS) ${latest.scoreShift.toFixed(2)}` : ""}
                {latest?.agreement != null ? ` · shadow agreement ${(latest.agreement * 100).toFixed(0)} %` : ""}
              </Text>
              <Suspense fallback={<Loading />}>
                <CanaryChart history={samples} />
              </Suspense>
              {can("manageServing") ? (
                <Group gap="xs">
                  <Button size="xs" color="green" onClick={() => action.mutate("promote")}>
                    Promote canary
                  </Button>
                  <Button size="xs" color="red" variant="light" onClick={() => action.mutate("rollback")}>
                    Roll back
                  </Button>
                </Group>
              ) : null}
            </Stack>
          ) : null}
          <Title order={4}>Deployments</Title>
          <Table aria-label="Deployments">
            <Table.Tbody>
              {e.deployments.map((d) => (
                <Table.Tr key={d.id}>
                  <Table.Td>v{d.version}</Table.Td>
                  <Table.Td>{d.alias}</Table.Td>
                  <Table.Td>{d.state}</Table.Td>
                  <Table.Td>{d.reason}</Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
          {can("viewServing") ? <TryIt name={name} /> : null}
          {can("viewServing") ? <FlaggedFeed /> : null}
        </>
      ) : null}
    </Stack>
  );
}
