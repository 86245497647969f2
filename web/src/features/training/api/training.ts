import { useMutation, useQueries, useQuery, useQueryClient } from "@tanstack/react-query";
import { useEffect, useRef, useState } from "react";
import { api, authHeaders, data, problemOf } from "@/lib/api-client";
import type { components } from "@/lib/api/training";
import type { Template } from "../params";

export type Job = components["schemas"]["JobPublic"];
export type JobCreate = components["schemas"]["JobCreate"];
export type MetricPoint = components["schemas"]["MetricPointPublic"];

export function useTemplates() {
  return useQuery({
    queryKey: ["templates"],
    queryFn: async () => (await data(api.training.GET("/v1/templates", {}))) as unknown as { items: Template[] },
    staleTime: 60_000,
  });
}

export function useTeams() {
  return useQuery({ queryKey: ["teams"], queryFn: () => data(api.training.GET("/v1/teams", {})) });
}

export function useJobs() {
  return useQuery({
    queryKey: ["training-jobs"],
    queryFn: () => data(api.training.GET("/v1/jobs", { params: { query: { limit: 100 } } })),
    refetchInterval: 2_000,
  });
}

export function useTrainingJob(id: string) {
  return useQuery({
    queryKey: ["training-jobs", id],
    queryFn: () => data(api.training.GET("/v1/jobs/{job_id}", { params: { path: { job_id: id } } })),
    refetchInterval: 2_000,
  });
}

export function useQueue() {
  return useQuery({
    queryKey: ["queue"],
    queryFn: async () => (await data(api.training.GET("/v1/queue", {}))) as unknown as Record<string, unknown>,
    refetchInterval: 3_000,
  });
}

export function useSubmitJob() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (body: JobCreate) => data(api.training.POST("/v1/jobs", { body })),
    onSuccess: () => client.invalidateQueries({ queryKey: ["training-jobs"] }),
  });
}

export function useJobAction(id: string) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (action: "pause" | "resume" | "cancel") => {
      const params = { params: { path: { job_id: id } } };
      if (action === "pause") return data(api.training.POST("/v1/jobs/{job_id}/pause", params));
      if (action === "resume") return data(api.training.POST("/v1/jobs/{job_id}/resume", params));
      return data(api.training.POST("/v1/jobs/{job_id}/cancel", params));
    },
    onSuccess: () => client.invalidateQueries({ queryKey: ["training-jobs"] }),
  });
}

export function useEvaluation(id: string, enabled: boolean) {
  return useQuery({
    queryKey: ["training-jobs", id, "evaluation"],
    enabled,
    queryFn: async () => (await data(api.training.GET("/v1/jobs/{job_id}/evaluation", { params: { path: { job_id: id } } }))) as unknown as Record<string, unknown>,
  });
}

/** Parse one server-sent-events block ("event:", "id:", "data:" lines). */
export function parseEvent(block: string): { event: string; id: string | null; data: string } {
  let event = "message";
  let id: string | null = null;
  const lines: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("id:")) id = line.slice(3).trim();
    else if (line.startsWith("data:")) lines.push(line.slice(5).trimStart());
  }
  return { event, id, data: lines.join("\n") };
}

/** The job's metric points, live from its event stream. EventSource cannot send the bearer
 * token, so the stream is read with fetch; a dropped connection reconnects with
 * Last-Event-ID and the server resumes after the last point seen. */
export function useMetricStream(jobId: string): { points: MetricPoint[]; status: string | null; error: unknown } {
  const [points, setPoints] = useState<MetricPoint[]>([]);
  const [status, setStatus] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const last = useRef<string | null>(null);
  useEffect(() => {
    const controller = new AbortController();
    let finished = false;
    setPoints([]);
    last.current = null;
    const run = async () => {
      while (!finished && !controller.signal.aborted) {
        try {
          const headers: Record<string, string> = { ...authHeaders(), accept: "text/event-stream" };
          if (last.current) headers["last-event-id"] = last.current;
          const response = await fetch(`/api/training/v1/jobs/${encodeURIComponent(jobId)}/events`, { headers, signal: controller.signal });
          if (!response.ok || !response.body) throw await problemOf(response);
          const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
          let buffer = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buffer += value;
            let cut;
            while ((cut = buffer.indexOf("\n\n")) >= 0) {
              const message = parseEvent(buffer.slice(0, cut));
              buffer = buffer.slice(cut + 2);
              if (message.id) last.current = message.id;
              if (message.event === "progress") {
                const point = JSON.parse(message.data) as MetricPoint;
                setPoints((p) => [...p, point]);
              } else if (message.event === "status") {
                const state = (JSON.parse(message.data) as { status: string }).status;
                setStatus(state);
                if (["succeeded", "failed", "cancelled"].includes(state)) finished = true;
              }
            }
          }
          if (finished) return;
        } catch (e) {
          if (controller.signal.aborted) return;
          setError(e);
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    };
    void run();
    return () => controller.abort();
  }, [jobId]);
  return { points, status, error };
}

export type BadCase = components["schemas"]["BadCasePublic"];

/** Each run's epoch history, for comparing runs on one chart (live while any runs). */
export function useRunHistories(ids: string[]) {
  return useQueries({
    queries: ids.map((id) => ({
      queryKey: ["training-jobs", id, "metrics", "epoch"],
      queryFn: () => data(api.training.GET("/v1/jobs/{job_id}/metrics", { params: { path: { job_id: id }, query: { kind: "epoch" } } })),
      refetchInterval: 5_000,
    })),
  });
}

export function useBadCases(id: string, enabled: boolean) {
  return useQuery({
    queryKey: ["training-jobs", id, "bad-cases"],
    enabled,
    queryFn: () => data(api.training.GET("/v1/jobs/{job_id}/bad-cases", { params: { path: { job_id: id }, query: { limit: 24 } } })),
  });
}

export interface SearchAnswer {
  job: Job;
  trials: Job[];
}

export function useSearch(id: string, enabled: boolean) {
  return useQuery({
    queryKey: ["searches", id],
    enabled,
    queryFn: async () => (await data(api.training.GET("/v1/searches/{job_id}", { params: { path: { job_id: id } } }))) as unknown as SearchAnswer,
    refetchInterval: 3_000,
  });
}

export function useSearches() {
  return useQuery({
    queryKey: ["training-jobs", "searches"],
    queryFn: () => data(api.training.GET("/v1/jobs", { params: { query: { kind: "search", limit: 20 } } })),
    refetchInterval: 5_000,
  });
}
