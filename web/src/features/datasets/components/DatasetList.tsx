import { Button, Group, Select, Stack, Table, TextInput, Title } from "@mantine/core";
import { useState } from "react";
import { Link } from "react-router-dom";
import { EmptyState, Loading, ProblemAlert } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { useCreateDataset, useDatasets } from "../api/datasets";

const TASK_TYPES = ["classification", "detection", "segmentation"];

export function CreateDatasetForm() {
  const create = useCreateDataset();
  const [name, setName] = useState("");
  const [description, setDescription] = useState("");
  const [taskType, setTaskType] = useState<string | null>("detection");
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        create.mutate(
          { name, description, task_type: (taskType ?? "detection") as "detection" },
          {
            onSuccess: () => {
              setName("");
              setDescription("");
            },
          },
        );
      }}
    >
      <Group align="end">
        <TextInput label="New dataset name" value={name} onChange={(e) => setName(e.currentTarget.value)} required />
        <TextInput label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} w={260} />
        <Select label="Task" data={TASK_TYPES} value={taskType} onChange={setTaskType} allowDeselect={false} />
        <Button type="submit" loading={create.isPending} disabled={!name.trim()}>
          Create
        </Button>
      </Group>
      <ProblemAlert error={create.error} />
    </form>
  );
}

export function DatasetList() {
  const datasets = useDatasets();
  const { can } = useAuth();
  return (
    <Stack>
      <Title order={2}>Datasets</Title>
      {can("manageDatasets") ? <CreateDatasetForm /> : null}
      <ProblemAlert error={datasets.error} />
      {datasets.isPending ? <Loading /> : null}
      {datasets.data && datasets.data.items.length === 0 ? (
        <EmptyState title="No datasets yet">Create one above, then import an archive into it.</EmptyState>
      ) : null}
      {datasets.data && datasets.data.items.length > 0 ? (
        <Table striped highlightOnHover aria-label="Datasets">
          <Table.Thead>
            <Table.Tr>
              <Table.Th>Name</Table.Th>
              <Table.Th>Task</Table.Th>
              <Table.Th>Latest version</Table.Th>
              <Table.Th>Owner</Table.Th>
              <Table.Th>Status</Table.Th>
            </Table.Tr>
          </Table.Thead>
          <Table.Tbody>
            {datasets.data.items.map((d) => (
              <Table.Tr key={d.id}>
                <Table.Td>
                  <Link to={`/datasets/${d.id}`}>{d.name}</Link>
                </Table.Td>
                <Table.Td>{d.task_type}</Table.Td>
                <Table.Td>{d.latest_version ?? "—"}</Table.Td>
                <Table.Td>{d.owner}</Table.Td>
                <Table.Td>{d.status}</Table.Td>
              </Table.Tr>
            ))}
          </Table.Tbody>
        </Table>
      ) : null}
    </Stack>
  );
}
