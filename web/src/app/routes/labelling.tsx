import { Stack, Title } from "@mantine/core";
import { useNavigate, useParams } from "react-router-dom";
import { useProject } from "@/features/labelling/api/tasks";
import { ProjectTable } from "@/features/labelling/components/ProjectPicker";

export function LabellingRoute() {
  const navigate = useNavigate();
  return (
    <Stack>
      <Title order={2}>Labelling</Title>
      <ProjectTable action="Label" onOpen={(p) => navigate(`/labelling/${p.id}`)} />
    </Stack>
  );
}


/** Start fetching the route's project at once (the lazy workspace reads the same query). */
export function useProjectEarly(): void {
  const { projectId = "" } = useParams();
  useProject(projectId);
}
