import { useInfiniteQuery, useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, data, raw } from "@/lib/api-client";
import type { components } from "@/lib/api/dataset";

export type Dataset = components["schemas"]["DatasetPublic"];
export type DatasetCreate = components["schemas"]["DatasetCreate"];
export type Version = components["schemas"]["VersionPublic"];
export type Job = components["schemas"]["JobPublic"];
export type Item = components["schemas"]["ManifestItem"];
export type Accepted = components["schemas"]["Accepted"];

export function useDatasets() {
  return useQuery({
    queryKey: ["datasets"],
    queryFn: () => data(api.dataset.GET("/v1/datasets", { params: { query: { limit: 200 } } })),
    refetchInterval: 5_000,
  });
}

export function useDataset(id: string) {
  return useQuery({
    queryKey: ["datasets", id],
    queryFn: () => data(api.dataset.GET("/v1/datasets/{dataset_id}", { params: { path: { dataset_id: id } } })),
  });
}

export function useCreateDataset() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: DatasetCreate) => data(api.dataset.POST("/v1/datasets", { body })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["datasets"] }),
  });
}

export function useVersions(datasetId: string) {
  return useQuery({
    queryKey: ["datasets", datasetId, "versions"],
    enabled: !!datasetId,
    queryFn: () =>
      data(
        api.dataset.GET("/v1/datasets/{dataset_id}/versions", {
          params: { path: { dataset_id: datasetId }, query: { limit: 100 } },
        }),
      ),
    refetchInterval: 5_000,
  });
}

/** Upload an archive; the answer names the import job to follow. */
export function useImportArchive(datasetId: string) {
  return useMutation({
    mutationFn: async ({ file, format }: { file: File; format: string }) => {
      const form = new FormData();
      form.append("file", file, file.name);
      const response = await raw(
        `/api/dataset/v1/datasets/${encodeURIComponent(datasetId)}/imports?format=${encodeURIComponent(format)}`,
        { method: "POST", body: form },
      );
      return (await response.json()) as Accepted;
    },
  });
}

/** A job, polled until it ends. */
export function useJob(jobId: string | null) {
  return useQuery({
    queryKey: ["dataset-jobs", jobId],
    enabled: !!jobId,
    queryFn: () => data(api.dataset.GET("/v1/jobs/{job_id}", { params: { path: { job_id: jobId ?? "" } } })),
    refetchInterval: (query) =>
      query.state.data && ["succeeded", "failed"].includes(query.state.data.status) ? false : 500,
  });
}

export const PAGE = 500;

export function useItems(datasetId: string, version: number, split: string | null, label: string | null) {
  return useInfiniteQuery({
    queryKey: ["datasets", datasetId, "versions", version, "items", split, label],
    initialPageParam: 0,
    queryFn: ({ pageParam }) =>
      data(
        api.dataset.GET("/v1/datasets/{dataset_id}/versions/{version}/items", {
          params: {
            path: { dataset_id: datasetId, version },
            query: {
              limit: PAGE,
              offset: pageParam,
              split: (split as "train" | "val" | "test" | "unassigned" | null) ?? undefined,
              label: label ?? undefined,
            },
          },
        }),
      ),
    getNextPageParam: (last) => (last.offset + last.items.length < last.total ? last.offset + PAGE : undefined),
  });
}

export function useStats(datasetId: string, version: number | null) {
  return useQuery({
    queryKey: ["datasets", datasetId, "versions", version, "stats"],
    enabled: version !== null,
    queryFn: () =>
      data(
        api.dataset.GET("/v1/datasets/{dataset_id}/versions/{version}/stats", {
          params: { path: { dataset_id: datasetId, version: version ?? 0 } },
        }),
      ),
  });
}

export function useDiff(datasetId: string, version: number | null, against: number | null) {
  return useQuery({
    queryKey: ["datasets", datasetId, "diff", version, against],
    enabled: version !== null && against !== null && version !== against,
    queryFn: () =>
      data(
        api.dataset.GET("/v1/datasets/{dataset_id}/versions/{version}/diff", {
          params: { path: { dataset_id: datasetId, version: version ?? 0 }, query: { against: against ?? 1 } },
        }),
      ),
  });
}

export function thumbnailUrl(datasetId: string, version: number, itemId: string, size = 128): string {
  const item = itemId.split("/").map(encodeURIComponent).join("/");
  return `/api/dataset/v1/datasets/${encodeURIComponent(datasetId)}/versions/${version}/items/${item}/thumbnail?size=${size}`;
}

export function blobUrl(datasetId: string, blob: string): string {
  return `/api/dataset/v1/datasets/${encodeURIComponent(datasetId)}/blobs/${blob}`;
}

export interface NearDuplicateGroup {
  item_ids: string[];
  max_distance: number;
}

export interface QualityReport {
  counts: Record<string, number>;
  summary: string[];
  near_duplicates: NearDuplicateGroup[];
  exact_duplicates: { blob?: string; item_ids: string[] }[];
  unreadable: { item_id: string; reason?: string }[];
  out_of_bounds: { item_id: string; label_index: number; kind: string; detail: string }[];
  imbalance_ratio: number | null;
  imbalanced: boolean;
  unlabelled_items: number;
  near_duplicate_threshold: number;
}

/** The version's stored quality report (asked for only when the version says it has one). */
export function useQuality(datasetId: string, version: number | null, exists: boolean) {
  return useQuery({
    queryKey: ["datasets", datasetId, "versions", version, "quality"],
    enabled: version !== null && exists,
    queryFn: async () =>
      (await data(api.dataset.GET("/v1/datasets/{dataset_id}/versions/{version}/quality", { params: { path: { dataset_id: datasetId, version: version ?? 0 } } }))) as unknown as QualityReport,
  });
}

export function useVersionJob(datasetId: string, version: number, kind: "quality" | "augment") {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body?: components["schemas"]["AugmentRequest"]) =>
      kind === "quality"
        ? data(api.dataset.POST("/v1/datasets/{dataset_id}/versions/{version}/quality", { params: { path: { dataset_id: datasetId, version } } }))
        : data(
            api.dataset.POST("/v1/datasets/{dataset_id}/versions/{version}/augmentations", {
              params: { path: { dataset_id: datasetId, version } },
              body: body as components["schemas"]["AugmentRequest"],
            }),
          ),
    onSuccess: () => client.invalidateQueries({ queryKey: ["datasets", datasetId] }),
  });
}
