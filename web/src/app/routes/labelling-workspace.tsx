import { Loading, ProblemAlert } from "@/components/ui/Problem";
import { useParams } from "react-router-dom";
import { useProject } from "@/features/labelling/api/tasks";
import { Workspace } from "@/features/labelling/components/Workspace";

export default function WorkspaceRoute() {
  const { projectId = "" } = useParams();
  const project = useProject(projectId);
  if (project.error) return <ProblemAlert error={project.error} />;
  if (!project.data) return <Loading />;
  return <Workspace project={project.data} />;
}
