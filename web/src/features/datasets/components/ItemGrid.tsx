import { Group, Select, Stack, Text } from "@mantine/core";
import { useVirtualizer } from "@tanstack/react-virtual";
import { useEffect, useMemo, useRef, useState } from "react";
import { AuthedImage } from "@/components/ui/AuthedImage";
import { EmptyState, ProblemAlert } from "@/components/ui/Problem";
import { thumbnailUrl, useItems, type Item } from "../api/datasets";

const CELL = 148;
const THUMB = 128;
const COLUMNS = 6;

/** Boxes, polygons and keypoints drawn over a thumbnail, in the thumbnail's pixels. */
export function LabelOverlay({ item }: { item: Item }) {
  const w = item.width ?? 0;
  const h = item.height ?? 0;
  if (!w || !h) return null;
  const s = THUMB / Math.max(w, h);
  const dx = (THUMB - w * s) / 2;
  const dy = (THUMB - h * s) / 2;
  return (
    <svg className="overlay" width={THUMB} height={THUMB} aria-hidden="true">
      <g transform={`translate(${dx} ${dy}) scale(${s})`}>
        {(item.labels ?? []).map((label, i) => {
          if (label.type === "box") {
            const [x, y, bw, bh] = label.bbox;
            return <rect key={i} x={x} y={y} width={bw} height={bh} className="shape" vectorEffect="non-scaling-stroke" />;
          }
          if (label.type === "polygon") {
            return label.polygons.map((ring, j) => (
              <polygon key={`${i}-${j}`} points={ring.join(" ")} className="shape" vectorEffect="non-scaling-stroke" />
            ));
          }
          if (label.type === "keypoints") {
            const dots = [];
            for (let k = 0; k + 2 < label.keypoints.length; k += 3) {
              if (label.keypoints[k + 2]) dots.push(<circle key={`${i}-${k}`} cx={label.keypoints[k]} cy={label.keypoints[k + 1]} r={3 / s} className="dot" />);
            }
            return dots;
          }
          return null;
        })}
      </g>
    </svg>
  );
}

export function ItemGrid({ datasetId, version, classes }: { datasetId: string; version: number; classes: string[] }) {
  const [split, setSplit] = useState<string | null>(null);
  const [label, setLabel] = useState<string | null>(null);
  const items = useItems(datasetId, version, split, label);
  const all = useMemo(() => items.data?.pages.flatMap((p) => p.items) ?? [], [items.data]);
  const total = items.data?.pages[0]?.total ?? 0;
  const parent = useRef<HTMLDivElement>(null);
  const rows = Math.ceil(all.length / COLUMNS);
  const virtualizer = useVirtualizer({ count: rows, getScrollElement: () => parent.current, estimateSize: () => CELL, overscan: 4 });
  const virtualRows = virtualizer.getVirtualItems();
  const lastRow = virtualRows[virtualRows.length - 1]?.index ?? 0;
  useEffect(() => {
    if (lastRow >= rows - 3 && items.hasNextPage && !items.isFetchingNextPage) void items.fetchNextPage();
  }, [lastRow, rows, items]);
  return (
    <Stack gap="xs">
      <Group>
        <Select label="Split" placeholder="all" clearable data={["train", "val", "test", "unassigned"]} value={split} onChange={setSplit} w={160} />
        <Select label="Class" placeholder="all" clearable searchable data={classes} value={label} onChange={setLabel} w={200} />
        <Text size="sm" c="dimmed" mt="lg">
          {total} items
        </Text>
      </Group>
      <ProblemAlert error={items.error} />
      {items.data && total === 0 ? <EmptyState title="No items match">Clear the filters, or import data into this dataset.</EmptyState> : null}
      <div ref={parent} className="grid-scroll" data-testid="item-grid">
        <div style={{ height: virtualizer.getTotalSize(), position: "relative" }}>
          {virtualRows.map((row) => (
            <div key={row.key} className="grid-row" style={{ transform: `translateY(${row.start}px)` }}>
              {all.slice(row.index * COLUMNS, row.index * COLUMNS + COLUMNS).map((item) => (
                <figure key={item.item_id} className="cell" title={item.item_id}>
                  <div className="thumb-box">
                    <AuthedImage url={thumbnailUrl(datasetId, version, item.item_id)} alt={item.item_id} size={THUMB} />
                    <LabelOverlay item={item} />
                  </div>
                  <figcaption>{(item.labels ?? []).map((l) => l.label).join(", ") || item.item_id}</figcaption>
                </figure>
              ))}
            </div>
          ))}
        </div>
      </div>
    </Stack>
  );
}
