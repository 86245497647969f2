import { AppShell, Badge, Button, Group, NavLink, Stack, Text } from "@mantine/core";
import { Link, Navigate, Outlet, useLocation } from "react-router-dom";
import { useAuth } from "@/lib/auth";

const NAV = [
  { to: "/datasets", label: "Datasets" },
  { to: "/labelling", label: "Labelling" },
  { to: "/review", label: "Review" },
  { to: "/training", label: "Training" },
  { to: "/registry", label: "Registry" },
  { to: "/serving", label: "Serving" },
];

export function Layout() {
  const { session, signOut } = useAuth();
  const location = useLocation();
  if (!session) return <Navigate to="/sign-in" replace />;
  return (
    <AppShell navbar={{ width: 200, breakpoint: 0 }} header={{ height: 48 }} padding="md">
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between">
          <Text fw={700}>Kiln</Text>
          <Group gap="xs">
            <Text size="sm" data-testid="who">
              {session.subject}
            </Text>
            {session.roles.map((r) => (
              <Badge key={r} variant="light">
                {r}
              </Badge>
            ))}
            <Button size="xs" variant="subtle" onClick={signOut}>
              Sign out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs">
        <Stack gap={2} component="nav" aria-label="Sections">
          {NAV.map((item) => (
            <NavLink
              key={item.to}
              component={Link}
              to={item.to}
              label={item.label}
              active={location.pathname.startsWith(item.to)}
            />
          ))}
          <NavLink href="/api/dataset/docs" label="API docs" target="_blank" />
        </Stack>
      </AppShell.Navbar>
      <AppShell.Main>
        <Outlet />
      </AppShell.Main>
    </AppShell>
  );
}
