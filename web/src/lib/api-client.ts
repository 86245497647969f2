// The one API client: typed per service from its OpenAPI document (src/lib/api/*.ts, made by
// `npm run generate`), always through the gateway's /api/<service>/, with the session's token.
import createClient, { type Middleware } from "openapi-fetch";
import type { paths as DatasetPaths } from "./api/dataset";
import type { paths as AnnotationPaths } from "./api/annotation";
import type { paths as TrainingPaths } from "./api/training";
import type { paths as RegistryPaths } from "./api/registry";
import type { paths as ServingPaths } from "./api/serving";
import { readSession } from "./session";

/** An RFC 9457 problem the API answered with; the UI shows its title and detail. */
export class ProblemError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    readonly detail: string,
    readonly errors: { field: string; message: string }[] = [],
  ) {
    super(`${title}: ${detail}`);
  }
}

export async function problemOf(response: Response): Promise<ProblemError> {
  let body: Record<string, unknown> = {};
  try {
    body = (await response.clone().json()) as Record<string, unknown>;
  } catch {
    // not JSON: fall back to the status line
  }
  const errors = Array.isArray(body.errors) ? (body.errors as ProblemError["errors"]) : [];
  return new ProblemError(
    response.status,
    typeof body.title === "string" ? body.title : response.statusText || "Request failed",
    typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`,
    errors,
  );
}

export function authHeaders(): Record<string, string> {
  const session = readSession();
  return session ? { authorization: `Bearer ${session.token}` } : {};
}

const auth: Middleware = {
  onRequest({ request }) {
    const session = readSession();
    if (session) request.headers.set("authorization", `Bearer ${session.token}`);
    return request;
  },
  async onResponse({ response }) {
    if (!response.ok) throw await problemOf(response);
    return response;
  },
};

function client<Paths extends {}>(service: string) {
  const c = createClient<Paths>({ baseUrl: `/api/${service}` });
  c.use(auth);
  return c;
}

export const api = {
  dataset: client<DatasetPaths>("dataset"),
  annotation: client<AnnotationPaths>("annotation"),
  training: client<TrainingPaths>("training"),
  registry: client<RegistryPaths>("registry"),
  serving: client<ServingPaths>("serving"),
};

/** The typed body of an openapi-fetch answer (errors were already thrown by the middleware). */
export async function data<T>(pending: Promise<{ data?: T; error?: unknown }>): Promise<T> {
  const { data: body } = await pending;
  return body as T;
}

/** A raw call through the gateway with the session's token (binary bodies, streams). */
export async function raw(path: string, init: RequestInit = {}): Promise<Response> {
  const response = await fetch(path, {
    ...init,
    headers: { ...authHeaders(), ...(init.headers as Record<string, string> | undefined) },
  });
  if (!response.ok) throw await problemOf(response);
  return response;
}
