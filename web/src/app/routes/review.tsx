import { Stack, Title } from "@mantine/core";
import { useNavigate, useParams } from "react-router-dom";
import { Loading, ProblemAlert } from "@/components/ui/Problem";
import { useProject } from "@/features/labelling/api/tasks";
import { ProjectTable } from "@/features/labelling/components/ProjectPicker";
import { ReviewQueue } from "@/features/review/components/ReviewQueue";

export function ReviewRoute() {
  const navigate = useNavigate();
  return (
    <Stack>
      <Title order={2}>Review</Title>
      <ProjectTable action="Review" onOpen={(p) => navigate(`/review/${p.id}`)} />
    </Stack>
  );
}

export function ReviewProjectRoute() {
  const { projectId = "" } = useParams();
  const project = useProject(projectId);
  if (project.error) return <ProblemAlert error={project.error} />;
  if (!project.data) return <Loading />;
  return <ReviewQueue project={project.data} />;
}
