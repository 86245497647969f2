import { lazy, Suspense, type ReactNode } from "react";
import { createBrowserRouter, Navigate, RouterProvider } from "react-router-dom";
import { Loading } from "@/components/ui/Problem";
import { Layout } from "./layout";
import { DatasetRoute, DatasetsRoute } from "./routes/datasets";
import { LabellingRoute, useProjectEarly } from "./routes/labelling";
import { ModelRoute, RegistryRoute } from "./routes/registry";
import { ReviewProjectRoute, ReviewRoute } from "./routes/review";
import { EndpointRoute, ServingRoute } from "./routes/serving";
import { SignInRoute } from "./routes/sign-in";
import { TrainingRoute } from "./routes/training";

// The canvas (Konva) and chart (uPlot) load only on the pages that draw them.
const WorkspaceRoute = lazy(() => import("./routes/labelling-workspace"));
const RunRoute = lazy(() => import("./routes/training-run"));

const later = (node: ReactNode) => <Suspense fallback={<Loading />}>{node}</Suspense>;

/** The workspace's project is asked for while its code (the canvas) is still loading. */
function WorkspaceShell() {
  useProjectEarly();
  return later(<WorkspaceRoute />);
}

const router = createBrowserRouter([
  { path: "/sign-in", element: <SignInRoute /> },
  {
    path: "/",
    element: <Layout />,
    children: [
      { index: true, element: <Navigate to="/datasets" replace /> },
      { path: "datasets", element: <DatasetsRoute /> },
      { path: "datasets/:datasetId", element: <DatasetRoute /> },
      { path: "labelling", element: <LabellingRoute /> },
      { path: "labelling/:projectId", element: <WorkspaceShell /> },
      { path: "review", element: <ReviewRoute /> },
      { path: "review/:projectId", element: <ReviewProjectRoute /> },
      { path: "training", element: <TrainingRoute /> },
      { path: "training/:jobId", element: later(<RunRoute />) },
      { path: "registry", element: <RegistryRoute /> },
      { path: "registry/:name", element: <ModelRoute /> },
      { path: "serving", element: <ServingRoute /> },
      { path: "serving/:name", element: <EndpointRoute /> },
      { path: "*", element: <Navigate to="/datasets" replace /> },
    ],
  },
]);

export function AppRouter() {
  return <RouterProvider router={router} />;
}
