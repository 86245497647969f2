import { useParams } from "react-router-dom";
import { EndpointDetail, EndpointList } from "@/features/serving/components/Serving";

export function ServingRoute() {
  return <EndpointList />;
}

export function EndpointRoute() {
  const { name = "" } = useParams();
  return <EndpointDetail key={name} name={name} />;
}
