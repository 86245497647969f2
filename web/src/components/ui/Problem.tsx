import { Alert, Center, Loader, Stack, Text } from "@mantine/core";
import type { ReactNode } from "react";
import { ProblemError } from "@/lib/api-client";

/** An API error as its problem+json title and detail (text only, never markup). */
export function ProblemAlert({ error }: { error: unknown }) {
  if (!error) return null;
  const title = error instanceof ProblemError ? error.title : "Something went wrong";
  const detail = error instanceof Error ? (error instanceof ProblemError ? error.detail : error.message) : String(error);
  return (
    <Alert color="red" title={title} role="alert" data-testid="problem">
      {detail}
    </Alert>
  );
}

export function Loading({ label = "Loading" }: { label?: string }) {
  return (
    <Center p="lg" aria-busy="true">
      <Loader size="sm" aria-label={label} />
    </Center>
  );
}

/** What an empty list means and what to do next. */
export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <Stack align="center" gap={4} p="xl" data-testid="empty">
      <Text fw={600}>{title}</Text>
      {children ? (
        <Text c="dimmed" size="sm" ta="center">
          {children}
        </Text>
      ) : null}
    </Stack>
  );
}
