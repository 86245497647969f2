import { Button, Group, NumberInput, Select, Stack, Table, TextInput } from "@mantine/core";
import { useQueryClient } from "@tanstack/react-query";
import { useState } from "react";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { useDatasets } from "@/features/datasets/api/datasets";
import { useCreateProject, useProjects, type Project, type ProjectCreate } from "../api/tasks";

const KINDS = ["classification", "boxes", "polygons", "masks", "keypoints"];

export function CreateProjectForm() {
  const datasets = useDatasets();
  const create = useCreateProject();
  const client = useQueryClient();
  const [name, setName] = useState("");
  const [datasetId, setDatasetId] = useState<string | null>(null);
  const [kind, setKind] = useState<string | null>("boxes");
  const [classes, setClasses] = useState("");
  const [batch, setBatch] = useState<number | string>(1);
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        const labels = classes.split(",").map((c) => c.trim()).filter(Boolean).map((c) => ({ name: c }));
        create.mutate(
          { name, dataset_id: datasetId ?? "", label_schema: { kind: (kind ?? "boxes") as ProjectCreate["label_schema"]["kind"], labels }, batch_size: Number(batch) || 1 },
          { onSuccess: () => void client.invalidateQueries({ queryKey: ["projects"] }) },
        );
      }}
    >
      <Group align="end">
        <TextInput label="New project" value={name} onChange={(e) => setName(e.currentTarget.value)} required w={180} />
        <Select label="Dataset" data={(datasets.data?.items ?? []).map((d) => ({ value: d.id, label: d.name }))} value={datasetId} onChange={setDatasetId} allowDeselect={false} w={200} />
        <Select label="Kind" data={KINDS} value={kind} onChange={setKind} allowDeselect={false} w={150} />
        <NumberInput label="Items per task" min={1} max={100} value={batch} onChange={setBatch} w={110} />
        <TextInput label="Classes (comma-separated)" value={classes} onChange={(e) => setClasses(e.currentTarget.value)} w={220} />
        <Button type="submit" loading={create.isPending} disabled={!name.trim() || !datasetId || !classes.trim()}>
          Create project
        </Button>
      </Group>
      <ProblemAlert error={create.error} />
    </form>
  );
}

export function ProjectTable({ onOpen, action }: { onOpen: (p: Project) => void; action: string }) {
  const projects = useProjects();
  const { can } = useAuth();
  return (
    <Stack>
      {can("manageDatasets") ? <CreateProjectForm /> : null}
      <ProblemAlert error={projects.error} />
      {projects.isPending ? <Loading /> : null}
      {projects.data && projects.data.length === 0 ? (
        <EmptyState title="No labelling projects">A data engineer creates one on a dataset; its versions then become tasks.</EmptyState>
      ) : null}
      {projects.data && projects.data.length > 0 ? (
        <Table aria-label="Projects" highlightOnHover>
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Project</Table.Th>
              <Table.Th>Kind</Table.Th>
              <Table.Th>Classes</Table.Th>
              <Table.Th />
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {projects.data.map((p) => (
              <Table.Tr key={p.id}>
                <Table.Td>{p.name}</Table.Td>
                <Table.Td>{p.label_schema.kind}</Table.Td>
                <Table.Td>{p.label_schema.labels.map((l) => l.name).join(", ")}</Table.Td>
                <Table.Td>
                  <Button size="compact-sm" onClick={() => onOpen(p)}>
                    {action}
                  </Button>
                </Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}
