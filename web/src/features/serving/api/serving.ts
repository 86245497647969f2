import { useMutation, useQuery, useQueryClient } from "@tanstack/react-query";
import { api, data, raw } from "@/lib/api-client";
import type { components } from "@/lib/api/serving";

export type Endpoint = components["schemas"]["EndpointPublic"];

export function useEndpoints() {
  return useQuery({ queryKey: ["endpoints"], queryFn: () => data(api.serving.GET("/v1/endpoints", {})), refetchInterval: 3_000 });
}

export function useEndpoint(name: string) {
  return useQuery({
    queryKey: ["endpoints", name],
    queryFn: () => data(api.serving.GET("/v1/endpoints/{name}", { params: { path: { name } } })),
    refetchInterval: 2_000,
  });
}

export function useCanaryAction(name: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (action: "promote" | "rollback") =>
      action === "promote"
        ? data(api.serving.POST("/v1/endpoints/{name}:promote", { params: { path: { name } } }))
        : data(api.serving.POST("/v1/endpoints/{name}:rollback", { params: { path: { name } } })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["endpoints"] }),
  });
}

export interface Answer {
  version: string | null;
  body: unknown;
}

/** Send an image's bytes (or a JSON body) to the endpoint; the answer names its version. */
export function usePredict(name: string) {
  return useMutation({
    mutationFn: async (input: File | string): Promise<Answer> => {
      const init: RequestInit =
        typeof input === "string"
          ? { method: "POST", body: input, headers: { "content-type": "application/json" } }
          : { method: "POST", body: input, headers: { "content-type": input.type || "application/octet-stream" } };
      const response = await raw(`/api/serving/v1/endpoints/${encodeURIComponent(name)}:predict`, init);
      return { version: response.headers.get("x-kiln-model-version"), body: await response.json() };
    },
  });
}
