/** Import and export of definitions as YAML (the same text `atrium workflows export` writes). */
import { parse, stringify } from "yaml";
import type { WorkflowDefinition } from "./types";

export function toYaml(definition: WorkflowDefinition): string {
  return stringify(definition, { lineWidth: 0 });
}

/** The definition in a YAML (or JSON) text; throws an Error saying what is wrong. */
export function fromYaml(text: string): WorkflowDefinition {
  let data: unknown;
  try {
    data = parse(text);
  } catch (error) {
    throw new Error(`Not valid YAML: ${error instanceof Error ? error.message : String(error)}`);
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) {
    throw new Error("A workflow is a mapping with name, nodes and edges.");
  }
  const definition = data as Partial<WorkflowDefinition>;
  if (typeof definition.name !== "string" || !definition.name) throw new Error("The workflow has no name.");
  if (!Array.isArray(definition.nodes) || !definition.nodes.length) throw new Error("The workflow has no nodes.");
  const bad = definition.nodes.find((n) => !n || typeof n.id !== "string" || typeof n.type !== "string");
  if (bad) throw new Error("Every node needs an id and a type.");
  if (definition.edges !== undefined && !Array.isArray(definition.edges)) throw new Error("edges must be a list.");
  return { ...definition, nodes: definition.nodes, edges: definition.edges ?? [] } as WorkflowDefinition;
}
