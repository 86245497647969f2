import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, data, raw } from "@/lib/api-client";
import type { components } from "@/lib/api/registry";

export function useModels() {
  return useQuery({ queryKey: ["models"], queryFn: () => data(api.registry.GET("/v1/models", { params: { query: { limit: 200 } } })), refetchInterval: 5_000 });
}

export function useModelVersions(name: string) {
  return useQuery({
    queryKey: ["models", name, "versions"],
    queryFn: () => data(api.registry.GET("/v1/models/{name}/versions", { params: { path: { name }, query: { limit: 100 } } })),
    refetchInterval: 3_000,
  });
}

export function useAliases(name: string) {
  return useQuery({ queryKey: ["models", name, "aliases"], queryFn: () => data(api.registry.GET("/v1/models/{name}/aliases", { params: { path: { name } } })), refetchInterval: 3_000 });
}

export function usePolicy(name: string) {
  return useQuery({ queryKey: ["models", name, "policy"], queryFn: () => data(api.registry.GET("/v1/models/{name}/policy", { params: { path: { name } } })) });
}

export function useModelLog(name: string) {
  return useQuery({ queryKey: ["models", name, "log"], queryFn: () => data(api.registry.GET("/v1/models/{name}/log", { params: { path: { name }, query: { limit: 50 } } })), refetchInterval: 5_000 });
}

export function usePromote(name: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: ({ alias, version, reason }: { alias: string; version: number; reason: string }) =>
      data(api.registry.POST("/v1/models/{name}/aliases/{alias}", { params: { path: { name, alias } }, body: { version, reason } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["models", name] }),
  });
}

export type Version = components["schemas"]["VersionPublic"];
export type RegistryJob = components["schemas"]["JobPublic"];

/** Start a compression job on a version; the job is then followed with useRegistryJob. */
export function useCompress(name: string) {
  return useMutation({
    mutationFn: (version: number) =>
      data(api.registry.POST("/v1/models/{name}/versions/{version}/compress", { params: { path: { name, version } }, body: { method: "dynamic-int8", samples: 64, seed: 0 } })),
  });
}

/** A registry job, polled until it finishes; its end refreshes the model's versions. */
export function useRegistryJob(name: string, jobId: string | null) {
  const client = useQueryClient();
  return useQuery({
    queryKey: ["registry-jobs", jobId],
    enabled: !!jobId,
    queryFn: async () => {
      const job = await data(api.registry.GET("/v1/jobs/{job_id}", { params: { path: { job_id: jobId ?? "" } } }));
      if (job.status !== "queued" && job.status !== "running") await client.invalidateQueries({ queryKey: ["models", name] });
      return job;
    },
    refetchInterval: (query) => (query.state.data && !["queued", "running"].includes(query.state.data.status) ? false : 1_000),
  });
}

/** Import an external TorchScript file as a new version (multipart: file and metadata JSON). */
export function useImportVersion(name: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: async ({ file, metadata }: { file: File; metadata: string }): Promise<Version> => {
      const form = new FormData();
      form.append("file", file);
      form.append("metadata", metadata);
      const response = await raw(`/api/registry/v1/models/${encodeURIComponent(name)}/versions`, { method: "POST", body: form });
      return (await response.json()) as Version;
    },
    onSuccess: () => client.invalidateQueries({ queryKey: ["models", name] }),
  });
}
