import react from "@vitejs/plugin-react";
import { defineConfig } from "vitest/config";

// Built into the Python package's folder that `atrium serve` answers at `/`.
export default defineConfig({
  plugins: [react()],
  build: {
    outDir: "../atrium/ui_dist",
    emptyOutDir: true,
    sourcemap: false,
  },
  server: {
    // `npm run dev` beside `atrium serve` on its default port.
    proxy: { "/v1": "http://127.0.0.1:8080" },
  },
  test: {
    include: ["src/**/*.test.ts", "src/**/*.test.tsx"],
    environment: "node",
  },
});
