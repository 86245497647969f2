import { Button, FileInput, Group, List, Progress, Select, Stack, Text } from "@mantine/core";
import { useEffect, useState } from "react";
import { useQueryClient } from "@tanstack/react-query";
import { ProblemAlert } from "@/components/ui/Problem";
import { useImportArchive, useJob } from "../api/datasets";

const FORMATS = ["auto", "coco", "yolo", "voc", "imagefolder", "csv", "jsonl"];

/** Upload an archive and follow its import: progress, then per-item problems. */
export function ImportPanel({ datasetId }: { datasetId: string }) {
  const [file, setFile] = useState<File | null>(null);
  const [format, setFormat] = useState<string | null>("auto");
  const start = useImportArchive(datasetId);
  const job = useJob(start.data?.job_id ?? null);
  const client = useQueryClient();
  const status = job.data?.status;
  useEffect(() => {
    if (status === "succeeded") void client.invalidateQueries({ queryKey: ["datasets"] });
  }, [status, client]);
  const problems = (job.data?.result?.problems ?? job.data?.result?.rejected ?? []) as unknown[];
  return (
    <Stack gap="xs">
      <Group align="end">
        <FileInput
          label="Archive (zip or tar.gz)"
          placeholder="Choose a file"
          value={file}
          onChange={setFile}
          accept=".zip,.tar.gz,.tgz"
          w={280}
        />
        <Select label="Format" data={FORMATS} value={format} onChange={setFormat} allowDeselect={false} w={140} />
        <Button
          onClick={() => file && start.mutate({ file, format: format ?? "auto" })}
          disabled={!file}
          loading={start.isPending}
        >
          Import
        </Button>
      </Group>
      <ProblemAlert error={start.error ?? job.error} />
      {job.data ? (
        <Stack gap={4} data-testid="import-job">
          <Text size="sm">
            Import {job.data.status}: {job.data.done}/{job.data.total} {job.data.message}
          </Text>
          <Progress value={Math.round((job.data.progress ?? 0) * 100)} aria-label="Import progress" />
          {job.data.error ? <ProblemAlert error={new Error(String(job.data.error.detail ?? job.data.error.title ?? "failed"))} /> : null}
          {problems.length > 0 ? (
            <List size="sm" aria-label="Problems per item">
              {problems.slice(0, 50).map((p, i) => (
                <List.Item key={i}>{typeof p === "string" ? p : JSON.stringify(p)}</List.Item>
              ))}
            </List>
          ) : null}
        </Stack>
      ) : null}
    </Stack>
  );
}
