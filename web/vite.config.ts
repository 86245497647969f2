import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";
import { fileURLToPath, URL } from "node:url";

// The console is served by Kiln's gateway at "/", next to the APIs under /api/<service>/.
export default defineConfig({
  plugins: [react()],
  resolve: { alias: { "@": fileURLToPath(new URL("./src", import.meta.url)) } },
  build: {
    outDir: "dist",
    // Assets are content-hashed; the gateway serves them immutable.
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 700,
  },
  server: { proxy: { "/api": "http://127.0.0.1:8100", "/console": "http://127.0.0.1:8100" } },
  test: {
    environment: "node",
    include: ["src/**/*.test.{ts,tsx}"],
    css: false,
  },
});
