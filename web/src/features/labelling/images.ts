// Task images for the canvas: fetched with the session's token, decoded off the main thread
// (HTMLImageElement.decode) and kept decoded for a few images, so an image asked for twice (the
// preview, then the canvas; the next item of a task) is fetched and decoded once.
import { authHeaders } from "@/lib/api-client";

const KEPT = 8; // decoded photos are large (a 12-megapixel one is 48 MB)
const loaded = new Map<string, Promise<HTMLImageElement>>();
const objectUrls = new Map<string, string>();
// The same images once decoded, for drawing in the very render that needs them.
const decoded = new Map<string, HTMLImageElement>();

/** The decoded image behind a URL if it is already in, else null (no fetch is started). */
export function peekImage(url: string): HTMLImageElement | null {
  return decoded.get(url) ?? null;
}

/** The decoded image behind a guarded URL; the same promise for the same URL while kept. */
export function loadImage(url: string): Promise<HTMLImageElement> {
  const known = loaded.get(url);
  if (known) {
    loaded.delete(url); // most recently used last
    loaded.set(url, known);
    return known;
  }
  const pending = (async () => {
    const response = await fetch(url, { headers: authHeaders() });
    if (!response.ok) throw new Error(`image ${url}: HTTP ${response.status}`);
    const objectUrl = URL.createObjectURL(await response.blob());
    objectUrls.set(url, objectUrl);
    const element = new window.Image();
    element.src = objectUrl;
    await element.decode();
    if (loaded.has(url)) decoded.set(url, element); // not if it was forgotten meanwhile
    return element;
  })();
  pending.catch(() => forget(url)); // a failed load is retried next time
  loaded.set(url, pending);
  while (loaded.size > KEPT) {
    const oldest = loaded.keys().next().value as string;
    forget(oldest);
  }
  return pending;
}

function forget(url: string): void {
  loaded.delete(url);
  decoded.delete(url);
  const objectUrl = objectUrls.get(url);
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrls.delete(url);
}

/** Which rendition to draw: the smallest that still has a pixel per screen pixel at this zoom
 * (drawing a 12-megapixel image scaled down on every frame is what makes a canvas slow). */
export function pickRendition<T extends { naturalWidth: number }>(
  renditions: (T | null)[],
  shownWidth: number,
): T | null {
  const ready = renditions.filter((r): r is T => r !== null).sort((a, b) => a.naturalWidth - b.naturalWidth);
  return ready.find((r) => r.naturalWidth >= shownWidth) ?? ready[ready.length - 1] ?? null;
}

/** Whether an image this large gets a preview rendition first (its longest side, in pixels). */
export const PREVIEW_SIZE = 960;
export function wantsPreview(width: number | undefined, height: number | undefined): boolean {
  return !!width && !!height && Math.max(width, height) > PREVIEW_SIZE * 1.25;
}
