import { Alert, Badge, Button, Group, Kbd, List, NumberInput, SegmentedControl, Stack, Text, Title } from "@mantine/core";
import { useCallback, useEffect, useMemo, useState } from "react";
import { EmptyState, ProblemAlert } from "@/components/ui/Problem";
import { ProblemError } from "@/lib/api-client";
import { blobUrl } from "@/features/datasets/api/datasets";
import { loadImage, peekImage, PREVIEW_SIZE, wantsPreview } from "../images";
import { fillPolygon, paintInto, paintStroke } from "../mask";
import { leaseNext, submitAndLeaseNext, type Project, type Task, type TaskItem } from "../api/tasks";
import { commit, fromLabels, history, redo, toSubmission, undo, type History, type Shape } from "../geometry";
import { LabelCanvas, type Tool } from "./LabelCanvas";

const CANVAS_W = 740;
const CANVAS_H = 540;

/** The decoded image at ``url`` (null while loading); ``failed`` once it could not be loaded. */
function useImageElement(url: string | null): { image: HTMLImageElement | null; failed: boolean } {
  const [state, setState] = useState<{ url: string; element: HTMLImageElement | null } | null>(null);
  // Already decoded (prefetched): drawn in this very render, not one effect and frame later.
  const ready = url ? peekImage(url) : null;
  useEffect(() => {
    if (!url || peekImage(url)) return;
    let current = true;
    loadImage(url)
      .then((element) => current && setState({ url, element }))
      .catch(() => current && setState({ url, element: null }));
    return () => {
      current = false;
    };
  }, [url]);
  if (ready) return { image: ready, failed: false };
  const mine = state && state.url === url ? state : null;
  return { image: mine?.element ?? null, failed: !!mine && !mine.element };
}

function previewUrl(datasetId: string, item: TaskItem): string | null {
  return wantsPreview(item.width, item.height) ? `${blobUrl(datasetId, item.blob)}/thumbnail?size=${PREVIEW_SIZE}` : null;
}

/** Every item of a newly leased task starts loading at once: a large one's preview first, its
 * original only after that (the two would compete for the same server and connection).
 * Settles when all are loaded (or failed). */
function prefetch(datasetId: string, items: TaskItem[]): Promise<unknown> {
  return Promise.all(
    items.map((it) => {
      const preview = previewUrl(datasetId, it);
      const original = () => loadImage(blobUrl(datasetId, it.blob));
      return (preview ? loadImage(preview).then(original, original) : original()).catch(() => undefined);
    }),
  );
}

/** The lease's time left, ticking on its own: the workspace (and its canvas) is not redrawn
 * every second for it. */
function LeaseLeft({ until }: { until: string | null | undefined }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, []);
  const secondsLeft = until ? Math.max(0, Math.round((Date.parse(until) - now) / 1000)) : null;
  return (
    <Badge color={secondsLeft !== null && secondsLeft < 60 ? "red" : "gray"} data-testid="lease-left">
      lease {secondsLeft !== null ? `${Math.floor(secondsLeft / 60)}:${String(secondsLeft % 60).padStart(2, "0")}` : "—"} left
    </Badge>
  );
}

/** The shapes a server problem names, e.g. "body.labels.img-1.2.bbox" or "labels[2].bbox". */
export function invalidShapes(error: unknown, itemId: string): Set<number> {
  const found = new Set<number>();
  if (!(error instanceof ProblemError)) return found;
  const texts = [...error.errors.map((e) => e.field), error.detail];
  for (const text of texts) {
    if (!text.includes(itemId) && !text.startsWith("labels[")) continue;
    const match = /(?:\[(\d+)\]|\.(\d+)\.)/.exec(text.slice(text.indexOf(itemId) + itemId.length));
    const index = match?.[1] ?? match?.[2];
    if (index !== undefined) found.add(Number(index));
  }
  return found;
}

export function Workspace({ project }: { project: Project }) {
  const [task, setTask] = useState<Task | null>(null);
  const [empty, setEmpty] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [index, setIndex] = useState(0);
  const [work, setWork] = useState<Record<string, History<Shape[]>>>({});
  const kind = project.label_schema.kind;
  const classes = project.label_schema.labels.map((l) => l.name);
  const [label, setLabel] = useState(classes[0] ?? "");
  const [tool, setTool] = useState<Tool>(kind === "boxes" ? "box" : kind === "polygons" ? "polygon" : kind === "keypoints" ? "keypoint" : kind === "masks" ? "brush" : "pan");
  const [brush, setBrush] = useState(12);
  const items = (task?.items ?? []) as unknown as TaskItem[];
  const item = items[index];
  // A large image is drawn from a 960 px rendition as soon as that arrives (the annotator can
  // label on it: shapes are in the original's pixels); the original takes over for zooming in.
  const previewAt = item ? previewUrl(project.dataset_id, item) : null;
  const { image: preview, failed: noPreview } = useImageElement(previewAt);
  const { image: original } = useImageElement(item && (!previewAt || preview || noPreview) ? blobUrl(project.dataset_id, item.blob) : null);
  const image = original ?? preview;
  const renditions = useMemo(() => [preview, original], [preview, original]);
  const shapes = item ? (work[item.item_id]?.present ?? []) : [];
  const suggestions = useMemo(
    () => (item && task?.prelabels ? fromLabels((task.prelabels as Record<string, unknown>)[item.item_id]) : []),
    [item, task],
  );
  const invalid = useMemo(() => (item ? invalidShapes(error, item.item_id) : new Set<number>()), [error, item]);

  // Show a leased task (or none): its items start loading at once, each item's work begins
  // from the labels it already has (a task sent back for rework).
  const show = useCallback(
    (next: Task | null) => {
      if (next) {
        // Then the images of the task likely leased next, so "submit" shows it at once; only
        // after this task's own, which they would otherwise slow down.
        const later = ((next.up_next ?? []) as unknown as TaskItem[]).slice(0, 1); // the one drawn first
        void prefetch(project.dataset_id, next.items as unknown as TaskItem[]).then(() => prefetch(project.dataset_id, later));
      }
      setTask(next);
      setEmpty(next === null);
      setIndex(0);
      const initial: Record<string, History<Shape[]>> = {};
      for (const it of (next?.items ?? []) as unknown as TaskItem[]) {
        const earlier = next?.labels ? fromLabels((next.labels as Record<string, unknown>)[it.item_id]) : [];
        initial[it.item_id] = history(earlier);
      }
      setWork(initial);
    },
    [project.dataset_id],
  );

  const start = useCallback(async () => {
    setBusy(true);
    setError(null);
    try {
      show(await leaseNext(project.id));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }, [project.id, show]);

  const change = useCallback(
    (update: (shapes: Shape[]) => Shape[]) => {
      if (!item) return;
      setWork((w) => {
        const h = w[item.item_id] ?? history<Shape[]>([]);
        return { ...w, [item.item_id]: commit(h, update(h.present)) };
      });
    },
    [item],
  );
  const step = useCallback(
    (move: (h: History<Shape[]>) => History<Shape[]>) => {
      if (!item) return;
      setWork((w) => ({ ...w, [item.item_id]: move(w[item.item_id] ?? history<Shape[]>([])) }));
    },
    [item],
  );
  const chooseClass = useCallback(
    (name: string) => {
      setLabel(name);
      if (kind !== "classification") return;
      change((current) => {
        const has = current.some((s) => s.type === "class" && s.label === name);
        if (project.label_schema.multi_label) {
          return has ? current.filter((s) => !(s.type === "class" && s.label === name)) : [...current, { type: "class", label: name }];
        }
        return [{ type: "class", label: name }];
      });
    },
    [change, kind, project.label_schema.multi_label],
  );
  const acceptSuggestions = useCallback(() => {
    if (suggestions.length) change((current) => [...current, ...suggestions]);
  }, [change, suggestions]);

  // In a masks project the brush and the polygon tool both paint into the label's mask.
  const paintMask = useCallback(
    (paint: Parameters<typeof paintInto>[4]) => {
      if (!item?.width || !item.height) return;
      const { width, height } = item;
      change((current) => paintInto(current, label, width, height, paint, (rle) => ({ type: "mask", label, rle }) as Shape));
    },
    [item, label, change],
  );
  const stroke = useCallback(
    (points: { x: number; y: number }[], radius: number) => paintMask((bitmap) => paintStroke(bitmap, points, radius)),
    [paintMask],
  );
  const add = useCallback(
    (shape: Shape) => {
      if (kind === "masks" && shape.type === "polygon") {
        paintMask((bitmap) => shape.polygons.forEach((ring) => fillPolygon(bitmap, ring)));
      } else change((current) => [...current, shape]);
    },
    [kind, paintMask, change],
  );

  const submit = useCallback(async () => {
    if (!task) return;
    setBusy(true);
    setError(null);
    try {
      const labels = Object.fromEntries(items.map((it) => [it.item_id, toSubmission(work[it.item_id]?.present ?? [])]));
      show(await submitAndLeaseNext(task.id, labels)); // the next task, without a reload
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  }, [task, items, work, show]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement) return;
      const mod = e.ctrlKey || e.metaKey;
      if (mod && e.key.toLowerCase() === "z") {
        e.preventDefault();
        step(e.shiftKey ? redo : undo);
      } else if (mod && e.key.toLowerCase() === "y") {
        e.preventDefault();
        step(redo);
      } else if (mod && e.key === "Enter") {
        e.preventDefault();
        void submit();
      } else if (!mod && /^[1-9]$/.test(e.key)) {
        const name = classes[Number(e.key) - 1];
        if (name) chooseClass(name);
      } else if (!mod && e.key === "a") {
        acceptSuggestions();
      } else if (!mod && e.key === "b" && kind === "boxes") setTool("box");
      else if (!mod && e.key === "b" && kind === "masks") setTool("brush");
      else if (!mod && e.key === "[") setBrush((r) => Math.max(1, Math.round(r / 1.25)));
      else if (!mod && e.key === "]") setBrush((r) => Math.min(500, Math.round(r * 1.25) + 1));
      else if (!mod && e.key === "v") setTool("pan");
      else if (!mod && e.key === "n" && index < items.length - 1) setIndex(index + 1);
      else if (!mod && e.key === "p" && index > 0) setIndex(index - 1);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [step, submit, classes, chooseClass, acceptSuggestions, kind, index, items.length]);

  const tools = [{ value: "pan", label: "Pan (V)" }];
  if (kind === "boxes") tools.push({ value: "box", label: "Box (B)" });
  if (kind === "masks") tools.push({ value: "brush", label: "Brush (B)" });
  if (kind === "polygons" || kind === "masks") tools.push({ value: "polygon", label: kind === "masks" ? "Polygon fill" : "Polygon" });
  if (kind === "keypoints") tools.push({ value: "keypoint", label: "Keypoint" });

  return (
    <Stack gap="xs">
      <Group justify="space-between">
        <Title order={3}>{project.name}</Title>
        <Group gap="xs">
          {task ? (
            <LeaseLeft until={task.lease_expires_at} />
          ) : null}
          <Button onClick={() => void start()} loading={busy && !task} variant={task ? "light" : "filled"}>
            {task ? "Skip to next task" : "Next task"}
          </Button>
        </Group>
      </Group>
      <ProblemAlert error={error} />
      {error instanceof ProblemError && error.errors.length ? (
        <List size="xs" c="red" aria-label="Invalid fields">
          {error.errors.map((e, i) => (
            <List.Item key={i}>
              {e.field}: {e.message}
            </List.Item>
          ))}
        </List>
      ) : null}
      {empty ? <EmptyState title="No task is waiting">Import data into the project's dataset, or come back later.</EmptyState> : null}
      {task && item ? (
        <Group align="start" wrap="nowrap" gap="sm">
          <Stack gap={4}>
            <LabelCanvas
              renditions={renditions}
              imageW={item.width ?? image?.naturalWidth ?? 1}
              imageH={item.height ?? image?.naturalHeight ?? 1}
              width={CANVAS_W}
              height={CANVAS_H}
              shapes={shapes}
              suggestions={suggestions}
              tool={tool}
              label={label}
              invalid={invalid}
              onAdd={add}
              brush={brush}
              onStroke={stroke}
            />
            <Text size="xs" c="dimmed" data-testid="item-name">
              item {index + 1}/{items.length}: {item.item_id} ({item.width}×{item.height}) · {image ? (original ? "image ready" : "image ready (preview)") : "loading image"}
            </Text>
          </Stack>
          <Stack gap="xs" w={290}>
            <SegmentedControl size="xs" data={tools} value={tool} onChange={(v) => setTool(v as Tool)} aria-label="Tool" />
            {kind === "masks" ? (
              <NumberInput size="xs" label="Brush radius (image pixels; [ and ] change it)" min={1} max={500} value={brush} onChange={(v) => setBrush(Math.max(1, Number(v) || 1))} />
            ) : null}
            <Text size="sm" fw={600}>
              Classes
            </Text>
            <Group gap={4}>
              {classes.map((name, i) => (
                <Button key={name} size="compact-xs" variant={name === label ? "filled" : "light"} onClick={() => chooseClass(name)}>
                  {i < 9 ? `${i + 1} ` : ""}
                  {name}
                </Button>
              ))}
            </Group>
            <Text size="sm" fw={600}>
              Labels ({shapes.length})
            </Text>
            <List size="xs" data-testid="shape-list">
              {shapes.map((s, i) => (
                <List.Item key={i} c={invalid.has(i) ? "red" : undefined}>
                  {s.type} {s.label} {s.type === "box" ? `[${s.bbox.join(", ")}]` : ""}
                  {s.type === "mask" && Array.isArray(s.rle.counts) ? ` ${s.rle.counts.filter((_, k) => k % 2 === 1).reduce((a, b) => a + b, 0)} px` : ""}
                  <Button size="compact-xs" variant="subtle" onClick={() => change((c) => c.filter((_, j) => j !== i))} aria-label={`Remove ${s.type} ${i + 1}`}>
                    ×
                  </Button>
                </List.Item>
              ))}
            </List>
            {suggestions.length ? (
              <Alert color="blue" p="xs">
                {suggestions.length} suggestion(s) from the model (dashed). <Kbd>A</Kbd> accepts them.
              </Alert>
            ) : null}
            <Group gap={4}>
              <Button size="xs" variant="default" onClick={() => step(undo)}>
                Undo
              </Button>
              <Button size="xs" variant="default" onClick={() => step(redo)}>
                Redo
              </Button>
              {items.length > 1 ? (
                <>
                  <Button size="xs" variant="default" disabled={index === 0} onClick={() => setIndex(index - 1)}>
                    Prev item
                  </Button>
                  <Button size="xs" variant="default" disabled={index >= items.length - 1} onClick={() => setIndex(index + 1)}>
                    Next item
                  </Button>
                </>
              ) : null}
            </Group>
            <Button onClick={() => void submit()} loading={busy} data-testid="submit">
              Submit (Ctrl+Enter)
            </Button>
            <Text size="xs" c="dimmed">
              Wheel zooms, <Kbd>V</Kbd> pans, <Kbd>1</Kbd>–<Kbd>9</Kbd> pick a class, <Kbd>Ctrl</Kbd>+<Kbd>Z</Kbd> undo, <Kbd>Ctrl</Kbd>+<Kbd>Y</Kbd> redo.
            </Text>
          </Stack>
        </Group>
      ) : null}
    </Stack>
  );
}
