import { useEffect, useState } from "react";
import { authHeaders } from "@/lib/api-client";

/** An image the API guards with the bearer token: <img src> cannot send it, so the bytes are
 * fetched (through the browser's HTTP cache: blobs are immutable) and shown from a blob: URL. */
export function useAuthedImage(url: string | null): string | null {
  const [objectUrl, setObjectUrl] = useState<string | null>(null);
  useEffect(() => {
    if (!url) return;
    let revoked = false;
    let made: string | null = null;
    const controller = new AbortController();
    fetch(url, { headers: authHeaders(), signal: controller.signal })
      .then((r) => (r.ok ? r.blob() : null))
      .then((blob) => {
        if (blob && !revoked) {
          made = URL.createObjectURL(blob);
          setObjectUrl(made);
        }
      })
      .catch(() => undefined);
    return () => {
      revoked = true;
      controller.abort();
      if (made) URL.revokeObjectURL(made);
      setObjectUrl(null);
    };
  }, [url]);
  return objectUrl;
}

export function AuthedImage({ url, alt, size }: { url: string; alt: string; size: number }) {
  const src = useAuthedImage(url);
  return src ? (
    <img src={src} alt={alt} width={size} height={size} className="thumb" />
  ) : (
    <div className="thumb thumb-empty" role="img" aria-label={alt} />
  );
}
