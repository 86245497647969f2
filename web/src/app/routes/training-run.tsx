import { useParams } from "react-router-dom";
import { RunPage } from "@/features/training/components/RunPage";

export default function RunRoute() {
  const { jobId = "" } = useParams();
  return <RunPage key={jobId} jobId={jobId} />;
}
