import { Button, Card, Center, Group, PasswordInput, Stack, Text, Title } from "@mantine/core";
import { useQuery } from "@tanstack/react-query";
import { useState } from "react";
import { useNavigate } from "react-router-dom";
import { ProblemAlert } from "@/components/ui/Problem";
import { raw } from "@/lib/api-client";
import { useAuth } from "@/lib/auth";
import { sessionFromToken, type Role } from "@/lib/session";

interface ConsoleInfo {
  mode: "embedded" | "token";
  tokens?: Partial<Record<Role, string>>;
}

export function SignInRoute() {
  const { signIn } = useAuth();
  const navigate = useNavigate();
  const [token, setToken] = useState("");
  const [error, setError] = useState<unknown>(null);
  const info = useQuery({
    queryKey: ["console-info"],
    queryFn: async () => (await (await raw("/console/session")).json()) as ConsoleInfo,
  });
  const use = (value: string) => {
    try {
      signIn(sessionFromToken(value.trim()));
      navigate("/datasets");
    } catch (e) {
      setError(e);
    }
  };
  return (
    <Center mih="100vh" bg="gray.0">
      <Card withBorder w={460} padding="xl">
        <Stack>
          <Title order={2}>Kiln console</Title>
          {info.data?.mode === "embedded" && info.data.tokens ? (
            <>
              <Text size="sm" c="dimmed">
                Embedded mode: pick a role (development tokens, valid for an hour).
              </Text>
              <Group gap="xs">
                {Object.entries(info.data.tokens).map(([role, value]) => (
                  <Button key={role} variant="light" onClick={() => use(value ?? "")}>
                    {role}
                  </Button>
                ))}
              </Group>
            </>
          ) : null}
          <form
            onSubmit={(e) => {
              e.preventDefault();
              use(token);
            }}
          >
            <Stack gap="xs">
              <PasswordInput
                label="Bearer token"
                description="A token from your identity provider (or `kiln token --role …`)."
                value={token}
                onChange={(e) => setToken(e.currentTarget.value)}
              />
              <Button type="submit" disabled={!token.trim()}>
                Sign in
              </Button>
            </Stack>
          </form>
          <ProblemAlert error={error ?? info.error} />
        </Stack>
      </Card>
    </Center>
  );
}
