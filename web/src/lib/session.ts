// Who is signed in: a bearer token and the roles it carries, kept for this browser tab only.
export const ROLES = [
  "admin",
  "data-engineer",
  "annotator",
  "reviewer",
  "ml-engineer",
  "viewer",
] as const;
export type Role = (typeof ROLES)[number];

export interface Session {
  token: string;
  subject: string;
  roles: Role[];
}

const KEY = "kiln.session";

export function readSession(): Session | null {
  const raw = sessionStorage.getItem(KEY);
  if (!raw) return null;
  try {
    return JSON.parse(raw) as Session;
  } catch {
    return null;
  }
}

export function writeSession(session: Session | null): void {
  if (session) sessionStorage.setItem(KEY, JSON.stringify(session));
  else sessionStorage.removeItem(KEY);
}

/** The claims of a JWT (not verified: the services do that; this only picks what to show). */
export function sessionFromToken(token: string): Session {
  const part = token.split(".")[1];
  if (!part) throw new Error("not a JWT: expected three dot-separated parts");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
  const claims = JSON.parse(json) as { sub?: unknown; roles?: unknown };
  const roles = Array.isArray(claims.roles)
    ? claims.roles.filter((r): r is Role => (ROLES as readonly string[]).includes(String(r)))
    : [];
  return { token, subject: String(claims.sub ?? "?"), roles };
}

/** What a role may do, mirroring the services' checks (which still enforce them). */
export const ABILITIES = {
  manageDatasets: ["admin", "data-engineer"],
  label: ["admin", "annotator"],
  review: ["admin", "reviewer"],
  train: ["admin", "ml-engineer"],
  promote: ["admin", "ml-engineer"],
  manageServing: ["admin", "ml-engineer"],
  viewServing: ["admin", "ml-engineer", "data-engineer", "viewer"],
  viewAnnotators: ["admin", "reviewer", "data-engineer"],
} satisfies Record<string, Role[]>;
export type Ability = keyof typeof ABILITIES;

export function can(session: Session | null, ability: Ability): boolean {
  const allowed: readonly Role[] = ABILITIES[ability];
  return !!session && session.roles.some((r) => allowed.includes(r));
}
