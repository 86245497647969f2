import { Stack, Title } from "@mantine/core";
import { useAuth } from "@/lib/auth";
import { JobList, QueueView } from "@/features/training/components/JobList";
import { SubmitJob } from "@/features/training/components/SubmitJob";

export function TrainingRoute() {
  const { can } = useAuth();
  return (
    <Stack>
      <Title order={2}>Training</Title>
      {can("train") ? <SubmitJob /> : null}
      <JobList />
      <QueueView />
    </Stack>
  );
}

