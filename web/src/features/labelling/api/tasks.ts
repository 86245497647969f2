import { useMutation, useQuery } from "@tanstack/react-query";
import { api, data } from "@/lib/api-client";
import type { components } from "@/lib/api/annotation";

export type Task = components["schemas"]["TaskPublic"];
export type ProjectCreate = components["schemas"]["ProjectCreate"];

/** A project as the annotation service answers it: its document leaves the reply's shape
 * open, so only the schema part is the generated type. */
export interface Project {
  id: string;
  name: string;
  dataset_id: string;
  lease_seconds: number;
  label_schema: components["schemas"]["LabelSchema"];
  task_counts?: Record<string, number>;
}

export interface TaskItem {
  item_id: string;
  blob: string;
  width?: number;
  height?: number;
  media_type?: string;
}

export function useProjects() {
  return useQuery({
    queryKey: ["projects"],
    queryFn: async () => (await data(api.annotation.GET("/v1/projects", {}))) as unknown as Project[],
    refetchInterval: 5_000,
  });
}

export function useProject(id: string | null) {
  return useQuery({
    queryKey: ["projects", id],
    enabled: !!id,
    queryFn: async () =>
      (await data(api.annotation.GET("/v1/projects/{project_id}", { params: { path: { project_id: id ?? "" } } }))) as unknown as Project,
    refetchInterval: 3_000,
  });
}

export function useCreateProject() {
  return useMutation({
    mutationFn: async (body: ProjectCreate) => (await data(api.annotation.POST("/v1/projects", { body }))) as unknown as Project,
  });
}

/** Lease the next task of a project (null: nothing waits). */
export async function leaseNext(projectId: string): Promise<Task | null> {
  const { data: task, response } = await api.annotation.POST("/v1/projects/{project_id}/lease", {
    params: { path: { project_id: projectId } },
  });
  return response.status === 204 ? null : (task ?? null);
}

/** Submit, and lease the next task of the project in the same call (null: nothing waits). */
export async function submitAndLeaseNext(taskId: string, labels: Record<string, Record<string, unknown>[]>): Promise<Task | null> {
  const answer = await data(
    api.annotation.POST("/v1/tasks/{task_id}/submission-and-lease", { params: { path: { task_id: taskId } }, body: { labels } }),
  );
  return answer.next ?? null;
}
