/** Variables a block may use: its upstream blocks' outputs and the workflow's inputs, with
 * the reference syntax of the field they go into (atrium/workflows/blocks/base.py's
 * template_scope: `inputs`, `vars`, `nodes.<id>.<output>`). */
import type { Edge } from "@xyflow/react";
import type { NodePorts } from "./ports";
import type { PortSpec } from "./types";

export interface Variable {
  /** The block it comes from (null: a workflow input or variable). */
  node: string | null;
  name: string;
  type: string;
  /** The path in the template scope: `nodes.llm.text`, `inputs.question`. */
  path: string;
}

/** Every block a node runs after: the sources of its edges, theirs, and so on. */
export function upstreamOf(nodeId: string, edges: Pick<Edge, "source" | "target">[]): string[] {
  const into = new Map<string, string[]>();
  for (const e of edges) into.set(e.target, [...(into.get(e.target) ?? []), e.source]);
  const seen = new Set<string>();
  const order: string[] = [];
  const stack = [...(into.get(nodeId) ?? [])];
  while (stack.length) {
    const id = stack.shift() as string;
    if (seen.has(id) || id === nodeId) continue;
    seen.add(id);
    order.push(id);
    stack.push(...(into.get(id) ?? []));
  }
  return order;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** `nodes.<id>` in the template language (ids may hold a dash, which needs quoting). */
function segment(name: string, language: ReferenceLanguage): string {
  if (IDENTIFIER.test(name)) return `.${name}`;
  return language === "jmespath" ? `."${name}"` : `["${name}"]`;
}

/** The variables a node may read, nearest upstream block first, then the workflow's inputs
 * and variables. Start's outputs are the workflow's inputs, so they are listed once, as those. */
export function variablesFor(
  nodeId: string,
  edges: Pick<Edge, "source" | "target">[],
  ports: Map<string, NodePorts>,
  types: Map<string, string>,
  workflowInputs: Record<string, PortSpec>,
  workflowVariables: Record<string, unknown> = {},
): Variable[] {
  const out: Variable[] = [];
  for (const id of upstreamOf(nodeId, edges)) {
    if (types.get(id) === "start") continue;
    for (const port of ports.get(id)?.outputs ?? []) {
      out.push({ node: id, name: port.name, type: port.type, path: `nodes${segment(id, "jinja")}${segment(port.name, "jinja")}` });
    }
  }
  for (const [name, spec] of Object.entries(workflowInputs)) {
    out.push({ node: null, name, type: spec.type ?? "any", path: `inputs${segment(name, "jinja")}` });
  }
  for (const name of Object.keys(workflowVariables)) {
    out.push({ node: null, name, type: "any", path: `vars${segment(name, "jinja")}` });
  }
  return out;
}

export type ReferenceLanguage = "template" | "jinja" | "jmespath";

/** Fields read as expressions (JMESPath by default, or Jinja by the block's `language`),
 * not as templates: everything else of type string is a Jinja2 template. */
const EXPRESSION_FIELDS: Record<string, string[]> = {
  transform: ["expressions"],
  condition: ["expression"],
  loop: ["until"],
};

/** How a field of a block reads a variable. */
export function languageOf(blockType: string, field: string, config: Record<string, unknown>): ReferenceLanguage {
  if (!(EXPRESSION_FIELDS[blockType] ?? []).includes(field)) return "template";
  return config.language === "jinja" ? "jinja" : "jmespath";
}

/** The text to insert for a variable: `{{ nodes.llm.text }}` in a template, the bare path
 * in an expression (quoted the JMESPath way where a name needs it). */
export function referenceText(variable: Variable, language: ReferenceLanguage): string {
  if (language === "template") return `{{ ${variable.path} }}`;
  if (language === "jinja") return variable.path;
  const [root, ...rest] = variable.node === null ? [variable.path.split(/[.[]/)[0], variable.name] : ["nodes", variable.node, variable.name];
  return root + rest.map((part) => segment(part, "jmespath")).join("");
}
