import { Stack, Title } from "@mantine/core";
import { useNavigate } from "react-router-dom";
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

