import type Konva from "konva";
import { memo, useEffect, useRef, useState } from "react";
import { Circle, Image as KonvaImage, Layer, Line, Rect, Stage } from "react-konva";
import { pickRendition } from "../images";
import { decodeRle, maskCanvas } from "../mask";
import { boxFromDrag, fitView, ringFrom, toImage, zoomAt, type Point, type Shape, type View } from "../geometry";

export type Tool = "pan" | "box" | "polygon" | "keypoint" | "brush";

interface Props {
  /** The same picture at several sizes (any may still be loading); the canvas draws the
   * smallest that is sharp at the current zoom. */
  renditions: (HTMLImageElement | null)[];
  imageW: number;
  imageH: number;
  width: number;
  height: number;
  shapes: Shape[];
  suggestions: Shape[];
  tool: Tool;
  label: string;
  invalid: Set<number>;
  onAdd: (shape: Shape) => void;
  /** Brush radius in image pixels, and where a finished stroke goes. */
  brush?: number;
  onStroke?: (points: Point[], radius: number) => void;
}

// A mask's coloured canvas, made once per mask shape (shapes are immutable values).
const MASK_CANVASES = new WeakMap<object, HTMLCanvasElement>();
function maskImage(shape: Extract<Shape, { type: "mask" }>, rgb: [number, number, number]): HTMLCanvasElement {
  let canvas = MASK_CANVASES.get(shape);
  if (!canvas) {
    canvas = maskCanvas(decodeRle(shape.rle), rgb);
    MASK_CANVASES.set(shape, canvas);
  }
  return canvas;
}

const STROKE = "#f76707";
const SUGGESTED = "#1c7ed6";
const INVALID = "#e03131";

/** The zoom/pan canvas: wheel zooms at the pointer, the pan tool drags the view, the box tool
 * drags a box, the polygon tool clicks points (double-click closes), the keypoint tool clicks. */
/** Memoised: the workspace re-renders for its side panel, the canvas only for its own props. */
export const LabelCanvas = memo(function LabelCanvas(props: Props) {
  const { renditions, imageW, imageH, width, height, shapes, suggestions, tool, label, invalid, onAdd, brush = 12, onStroke } = props;
  const [stroke, setStroke] = useState<Point[]>([]);
  const [view, setView] = useState<View>(() => fitView(imageW, imageH, width, height));
  const [drag, setDrag] = useState<{ start: Point; now: Point; screen: Point; view: View } | null>(null);
  const [ring, setRing] = useState<Point[]>([]);
  const stage = useRef<Konva.Stage>(null);
  const image = pickRendition(renditions, imageW * view.scale);
  const loaded = renditions.some((r) => r !== null);

  useEffect(() => {
    setView(fitView(imageW, imageH, width, height));
    setRing([]);
  }, [imageW, imageH, width, height, loaded]);

  const pointer = (): Point => stage.current?.getPointerPosition() ?? { x: 0, y: 0 };

  const onWheel = (e: Konva.KonvaEventObject<WheelEvent>) => {
    e.evt.preventDefault();
    setView((v) => zoomAt(v, pointer(), e.evt.deltaY < 0 ? 1.15 : 1 / 1.15));
  };
  const onDown = (e: Konva.KonvaEventObject<MouseEvent>) => {
    if (e.evt.button !== 0) return;
    const screen = pointer();
    const at = toImage(view, screen);
    if (tool === "polygon") {
      setRing((r) => [...r, at]);
      return;
    }
    if (tool === "brush") {
      setStroke([at]);
      return;
    }
    if (tool === "keypoint") {
      onAdd({ type: "keypoints", label, keypoints: [Math.round(at.x * 10) / 10, Math.round(at.y * 10) / 10, 2] });
      return;
    }
    setDrag({ start: at, now: at, screen, view });
  };
  const onMove = () => {
    if (tool === "brush" && stroke.length) {
      setStroke((points) => [...points, toImage(view, pointer())]);
      return;
    }
    if (!drag) return;
    const screen = pointer();
    if (tool === "pan") {
      setView({ ...drag.view, x: drag.view.x + screen.x - drag.screen.x, y: drag.view.y + screen.y - drag.screen.y });
    } else {
      setDrag({ ...drag, now: toImage(view, screen) });
    }
  };
  const onUp = () => {
    if (tool === "brush" && stroke.length) {
      onStroke?.(stroke, brush);
      setStroke([]);
      return;
    }
    if (drag && tool === "box") {
      const bbox = boxFromDrag(drag.start, drag.now, imageW, imageH);
      if (bbox) onAdd({ type: "box", label, bbox });
    }
    setDrag(null);
  };
  const onDouble = () => {
    if (tool !== "polygon") return;
    // The double click's own two clicks added the last point twice.
    const points = ring.slice(0, -1);
    const flat = ringFrom(points);
    if (flat) onAdd({ type: "polygon", label, polygons: [flat] });
    setRing([]);
  };

  const drawn = (shape: Shape, i: number, colour: string, dashed: boolean) => {
    const stroke = invalid.has(i) && !dashed ? INVALID : colour;
    const sw = 2 / view.scale;
    const dash = dashed ? [6 / view.scale, 4 / view.scale] : undefined;
    if (shape.type === "box") {
      const [x, y, w, h] = shape.bbox;
      return <Rect key={`${dashed}-${i}`} x={x} y={y} width={w} height={h} stroke={stroke} strokeWidth={sw} dash={dash} />;
    }
    if (shape.type === "polygon") {
      return shape.polygons.map((r, j) => <Line key={`${dashed}-${i}-${j}`} points={r} closed stroke={stroke} strokeWidth={sw} dash={dash} />);
    }
    if (shape.type === "mask") {
      const rgb: [number, number, number] = dashed ? [28, 126, 214] : invalid.has(i) ? [224, 49, 49] : [247, 103, 7];
      return <KonvaImage key={`${dashed}-${i}`} image={maskImage(shape, rgb)} width={imageW} height={imageH} opacity={dashed ? 0.3 : 0.45} listening={false} />;
    }
    if (shape.type === "keypoints") {
      const dots = [];
      for (let k = 0; k + 2 < shape.keypoints.length; k += 3) {
        dots.push(<Circle key={`${dashed}-${i}-${k}`} x={shape.keypoints[k]} y={shape.keypoints[k + 1]} radius={4 / view.scale} fill={stroke} />);
      }
      return dots;
    }
    return null;
  };

  const preview = drag && tool === "box" ? boxFromDrag(drag.start, drag.now, imageW, imageH, 0) : null;
  return (
    <div data-testid="label-canvas" className="canvas">
    <Stage
      ref={stage}
      width={width}
      height={height}
      onWheel={onWheel}
      onMouseDown={onDown}
      onMouseMove={onMove}
      onMouseUp={onUp}
      onDblClick={onDouble}
    >
      <Layer x={view.x} y={view.y} scaleX={view.scale} scaleY={view.scale}>
        {image ? <KonvaImage image={image} width={imageW} height={imageH} /> : null}
        {suggestions.map((s, i) => drawn(s, i, SUGGESTED, true))}
        {shapes.map((s, i) => drawn(s, i, STROKE, false))}
        {preview ? <Rect x={preview[0]} y={preview[1]} width={preview[2]} height={preview[3]} stroke={STROKE} strokeWidth={1 / view.scale} dash={[4 / view.scale, 4 / view.scale]} /> : null}
        {stroke.length > 0 ? (
          <Line points={stroke.flatMap((p) => [p.x, p.y])} stroke={STROKE} strokeWidth={brush * 2} lineCap="round" lineJoin="round" opacity={0.45} listening={false} />
        ) : null}
        {ring.length > 0 ? <Line points={ring.flatMap((p) => [p.x, p.y])} stroke={STROKE} strokeWidth={2 / view.scale} /> : null}
      </Layer>
    </Stage>
    </div>
  );
});
