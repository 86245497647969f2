import { Button, FileInput, Group, Select, Stack, Text, Textarea, Title } from "@mantine/core";
import { useState } from "react";
import { ProblemAlert } from "@/components/ui/Problem";
import { useCompress, useImportVersion, useRegistryJob, type Version } from "../api/registry";
import { describe, summarise } from "../compression";

/** Start a compression job on a version and follow it to the derived version's report. */
export function CompressPanel({ name, versions }: { name: string; versions: Version[] }) {
  const compress = useCompress(name);
  const job = useRegistryJob(name, compress.data?.job_id ?? null);
  const [chosen, setChosen] = useState<string | null>(null);
  const source = chosen ?? String(versions.find((v) => !v.compression || Object.keys(v.compression).length === 0)?.version ?? versions[0]?.version ?? "");
  const result = (job.data?.result ?? {}) as Record<string, unknown>;
  const parent = versions.find((v) => v.version === Number(result.parent_version));
  const derived = versions.find((v) => v.version === Number(result.version));
  const done = job.data?.status === "succeeded";
  return (
    <Stack gap="xs" className="panel">
      <Title order={4}>Compress</Title>
      <Group align="end">
        <Select label="Version to compress" data={versions.map((v) => String(v.version))} value={source} onChange={setChosen} w={180} />
        <Button variant="light" onClick={() => compress.mutate(Number(source))} loading={compress.isPending || job.data?.status === "running" || job.data?.status === "queued"} disabled={!source}>
          Compress (dynamic int8)
        </Button>
      </Group>
      <ProblemAlert error={compress.error ?? job.error} />
      {job.data ? (
        <Text size="sm" data-testid="compression-job">
          job {job.data.status}
          {job.data.message ? `: ${job.data.message}` : ""}
          {done ? ` · v${String(result.version)} — ${describe(summarise(result, (parent?.metrics ?? {}) as Record<string, unknown>, (derived?.metrics ?? {}) as Record<string, unknown>))}` : ""}
        </Text>
      ) : null}
      {job.data?.error ? <ProblemAlert error={new Error(JSON.stringify(job.data.error))} /> : null}
    </Stack>
  );
}

// A valid starting point: the declared signature (inputs and outputs without the batch
// dimension), the class names in output order, and the preprocessing the server applies.
const METADATA_EXAMPLE = JSON.stringify(
  {
    signature: { inputs: [{ name: "features", dtype: "FP32", shape: [8] }], outputs: [{ name: "logits", dtype: "FP32", shape: [2] }] },
    label_map: ["cat", "dog"],
    preprocessing: { kind: "tabular", mean: [0.0], std: [1.0] },
    metrics: { accuracy: 0.9 },
    description: "imported from elsewhere",
  },
  null,
  2,
);

/** Import an external TorchScript file as a new version of this model. */
export function ImportPanel({ name }: { name: string }) {
  const importVersion = useImportVersion(name);
  const [file, setFile] = useState<File | null>(null);
  const [metadata, setMetadata] = useState(METADATA_EXAMPLE);
  return (
    <Stack gap="xs" className="panel">
      <Title order={4}>Import an external model</Title>
      <FileInput label="TorchScript file (torch.jit.save)" placeholder="model.pt" value={file} onChange={setFile} w={360} clearable />
      <Textarea label="Metadata (JSON: signature, label_map, preprocessing; metrics optional)" value={metadata} onChange={(e) => setMetadata(e.currentTarget.value)} autosize minRows={4} maxRows={12} />
      <Button w={160} variant="light" disabled={!file} loading={importVersion.isPending} onClick={() => file && importVersion.mutate({ file, metadata })}>
        Import
      </Button>
      <ProblemAlert error={importVersion.error} />
      {importVersion.data ? <Text size="sm" data-testid="imported">Imported as v{importVersion.data.version}.</Text> : null}
    </Stack>
  );
}
