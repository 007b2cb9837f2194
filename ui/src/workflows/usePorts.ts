/** Each canvas block's typed ports, asked of the server (they depend on the block's config). */
import { useEffect, useMemo, useRef, useState } from "react";
import { fetchPorts } from "./api";
import { type NodePorts, portsFromAnswer, startPorts } from "./ports";
import type { NodeSpec, PortSpec } from "./types";

const ASK_DELAY_MS = 150;
const NO_PORTS: NodePorts = { inputs: [], outputs: [], controls: [] };

/** What the server is asked about one block: its type and config, as one cache key. */
export function portsKey(spec: Pick<NodeSpec, "type" | "config">): string {
  return `${spec.type}\u0000${JSON.stringify(spec.config ?? {})}`;
}

/**
 * Ports by node id. Answers are cached by (type, config), so a move or a selection asks
 * nothing and a 300-block canvas asks once. While a block's config is invalid (it gives no
 * ports) or its answer is on the way, the block keeps the last ports it had.
 */
export function usePorts(specs: NodeSpec[], inputs: Record<string, PortSpec>): Map<string, NodePorts> {
  const [answers, setAnswers] = useState<Map<string, NodePorts | null>>(new Map());
  const asked = useRef(new Set<string>());
  const lastGood = useRef(new Map<string, NodePorts>());
  const wanted = useMemo(() => {
    const keys = new Map<string, Pick<NodeSpec, "type" | "config">>();
    for (const spec of specs) if (spec.type !== "start") keys.set(portsKey(spec), { type: spec.type, config: spec.config ?? {} });
    return keys;
  }, [specs]);

  useEffect(() => {
    const missing = [...wanted].filter(([key]) => !answers.has(key) && !asked.current.has(key));
    if (!missing.length) return;
    const timer = setTimeout(() => {
      missing.forEach(([key]) => asked.current.add(key));
      fetchPorts(missing.map(([, block]) => block))
        .then((found) => setAnswers((old) => {
          const next = new Map(old);
          found.forEach((answer, index) => next.set(missing[index][0], portsFromAnswer(answer)));
          return next;
        }))
        // Not answered (offline, signed out): asked again with the next change.
        .catch(() => missing.forEach(([key]) => asked.current.delete(key)));
    }, ASK_DELAY_MS);
    return () => clearTimeout(timer);
  }, [wanted, answers]);

  return useMemo(() => {
    const out = new Map<string, NodePorts>();
    for (const spec of specs) {
      const ports = spec.type === "start" ? startPorts(inputs) : answers.get(portsKey(spec));
      if (ports) lastGood.current.set(spec.id, ports);
      out.set(spec.id, ports ?? lastGood.current.get(spec.id) ?? NO_PORTS);
    }
    return out;
  }, [specs, inputs, answers]);
}
