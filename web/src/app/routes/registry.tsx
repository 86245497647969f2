import { useParams } from "react-router-dom";
import { ModelDetail, ModelList } from "@/features/registry/components/Registry";

export function RegistryRoute() {
  return <ModelList />;
}

export function ModelRoute() {
  const { name = "" } = useParams();
  return <ModelDetail key={name} name={name} />;
}
