import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, data } from "@/lib/api-client";

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
