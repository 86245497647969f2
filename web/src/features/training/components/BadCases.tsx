import { Badge, SimpleGrid, Stack, Text, Title } from "@mantine/core";
import { AuthedImage } from "@/components/ui/AuthedImage";
import { ProblemAlert } from "@/components/ui/Problem";
import { thumbnailUrl } from "@/features/datasets/api/datasets";
import { useBadCases, type Job } from "../api/training";

/** The evaluation's misclassified items, least confident first, as a gallery of thumbnails. */
export function BadCases({ job }: { job: Job }) {
  const cases = useBadCases(job.id, job.status === "succeeded");
  if (cases.error) return <ProblemAlert error={cases.error} />;
  const items = cases.data?.items ?? [];
  return (
    <Stack gap="xs">
      <Title order={4}>Bad cases</Title>
      {cases.data && items.length === 0 ? <Text size="sm">No misclassified items in the {job.eval_split} split.</Text> : null}
      <SimpleGrid cols={6} spacing="xs" data-testid="bad-cases">
        {items.map((c) => (
          <figure key={c.item_id} className="cell">
            <div className="thumb-box">
              <AuthedImage url={thumbnailUrl(job.dataset_id, job.dataset_version, c.item_id)} alt={`${c.item_id}: ${c.label} taken for ${c.predicted}`} size={128} />
            </div>
            <figcaption title={c.item_id}>{c.item_id}</figcaption>
            <Text size="xs">
              <Badge size="xs" color="green" variant="light">
                {c.label}
              </Badge>{" "}
              →{" "}
              <Badge size="xs" color="red" variant="light">
                {c.predicted}
              </Badge>{" "}
              {(c.confidence * 100).toFixed(0)} %
            </Text>
          </figure>
        ))}
      </SimpleGrid>
    </Stack>
  );
}
