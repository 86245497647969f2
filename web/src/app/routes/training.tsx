import { Stack, Title } from "@mantine/core";
import { lazy, Suspense } from "react";
import { Loading } from "@/components/ui/Problem";
import { useAuth } from "@/lib/auth";
import { JobList, QueueView } from "@/features/training/components/JobList";
import { SearchList } from "@/features/training/components/Searches";
import { SubmitJob } from "@/features/training/components/SubmitJob";

// uPlot loads with the chart, not with the first page.
const CompareRuns = lazy(() => import("@/features/training/components/CompareRuns"));

export function TrainingRoute() {
  const { can } = useAuth();
  return (
    <Stack>
      <Title order={2}>Training</Title>
      {can("train") ? <SubmitJob /> : null}
      <JobList />
      <Suspense fallback={<Loading />}>
        <CompareRuns />
      </Suspense>
      <SearchList />
      <QueueView />
    </Stack>
  );
}

