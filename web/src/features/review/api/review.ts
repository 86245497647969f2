import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, data } from "@/lib/api-client";
import type { components } from "@/lib/api/annotation";
import type { Task } from "@/features/labelling/api/tasks";

export function useReviewQueue(projectId: string) {
  return useQuery({
    queryKey: ["review", projectId],
    queryFn: async () => {
      const page = (await data(
        api.annotation.GET("/v1/projects/{project_id}/tasks", {
          params: { path: { project_id: projectId }, query: { status: "in_review", limit: 50 } },
        }),
      )) as unknown as { items: Task[]; total: number };
      return page;
    },
    refetchInterval: 3_000,
  });
}

export function useReview(projectId: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: ({ taskId, accept, comment }: { taskId: string; accept: boolean; comment: string }) =>
      data(api.annotation.POST("/v1/tasks/{task_id}/review", { params: { path: { task_id: taskId } }, body: { accept, comment } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["review", projectId] }),
  });
}

export function useCommit(projectId: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (datasetVersion: number) =>
      data(api.annotation.POST("/v1/projects/{project_id}/commits", { params: { path: { project_id: projectId } }, body: { dataset_version: datasetVersion } })),
    onSuccess: () => client.invalidateQueries(),
  });
}

export function useAnnotators(projectId: string) {
  return useQuery({
    queryKey: ["annotators", projectId],
    queryFn: async () =>
      (await data(api.annotation.GET("/v1/projects/{project_id}/annotators", { params: { path: { project_id: projectId } } }))) as unknown,
    refetchInterval: 10_000,
  });
}

export type OverlapGroup = components["schemas"]["OverlapGroup"];

/** Items labelled by several annotators, their labels side by side, least agreement first. */
export function useOverlaps(projectId: string) {
  return useQuery({
    queryKey: ["overlaps", projectId],
    queryFn: () => data(api.annotation.GET("/v1/projects/{project_id}/overlaps", { params: { path: { project_id: projectId } } })),
    refetchInterval: 10_000,
  });
}
