import { useParams } from "react-router-dom";
import { DatasetDetail } from "@/features/datasets/components/DatasetDetail";
import { DatasetList } from "@/features/datasets/components/DatasetList";

export function DatasetsRoute() {
  return <DatasetList />;
}

export function DatasetRoute() {
  const { datasetId = "" } = useParams();
  return <DatasetDetail key={datasetId} datasetId={datasetId} />;
}
