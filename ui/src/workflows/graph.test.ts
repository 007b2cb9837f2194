import { describe, expect, it } from "vitest";
import { definitionToGraph, fillTemplate, graphToDefinition, newNodeId } from "./graph";
import { CONTROL_IN } from "./ports";
import type { WorkflowDefinition } from "./types";
import { fromYaml, toYaml } from "./yamlio";

const definition: WorkflowDefinition = {
  name: "shout",
  description: "Upper-case a text",
  inputs: { text: { type: "string" } },
  nodes: [
    { id: "start", type: "start", config: {}, position: { x: 0, y: 10 } },
    { id: "t", type: "transform", config: { expressions: { out: "data" } }, retry: { attempts: 3 }, on_error: "continue", position: { x: 300, y: 10 } },
    { id: "end", type: "end", config: { outputs: { result: { type: "any" } } }, position: { x: 600, y: 10 } },
  ],
  edges: [
    { source: "start", source_handle: "text", target: "t", target_handle: "data" },
    { source: "t", source_handle: "out", target: "end", target_handle: "result" },
    { source: "t", source_handle: "error", target: "end" },
  ],
};

describe("definition <-> graph", () => {
  it("round-trips every field, policies and control edges included", () => {
    const graph = definitionToGraph(definition);
    expect(graph.nodes.map((n) => [n.id, n.position.x])).toEqual([["start", 0], ["t", 300], ["end", 600]]);
    expect(graph.edges[2].targetHandle).toBe(CONTROL_IN);
    expect(graph.meta).toEqual({ name: "shout", description: "Upper-case a text", inputs: { text: { type: "string" } } });
    expect(graphToDefinition(graph)).toEqual(definition);
  });
  it("lays out nodes without positions and stores the new positions", () => {
    const graph = definitionToGraph({ ...definition, nodes: definition.nodes.map(({ position: _, ...n }) => n) });
    const xs = graph.nodes.map((n) => n.position.x);
    expect(new Set(xs).size).toBe(3);
    graph.nodes[1].position = { x: 12.6, y: 7.2 };
    expect(graphToDefinition(graph).nodes[1].position).toEqual({ x: 13, y: 7 });
  });
  it("survives YAML", () => {
    const text = toYaml(definition);
    expect(text).toContain("source_handle: text");
    expect(fromYaml(text)).toEqual(definition);
  });
  it("refuses YAML that is not a workflow, saying why", () => {
    expect(() => fromYaml("name: [unclosed")).toThrow(/Not valid YAML/);
    expect(() => fromYaml("- a\n- b")).toThrow(/mapping/);
    expect(() => fromYaml("name: x\nnodes: []")).toThrow(/no nodes/);
    expect(() => fromYaml("name: x\nnodes: [{id: a}]")).toThrow(/id and a type/);
  });
});

describe("helpers", () => {
  it("numbers new node ids", () => {
    expect(newNodeId("llm", ["start"])).toBe("llm");
    expect(newNodeId("llm", ["llm", "llm_2"])).toBe("llm_3");
  });
  it("fills template placeholders with defaults, keeping types", () => {
    const filled = fillTemplate(
      { a: "${n}", b: "top ${n} of ${kb}", c: ["${missing}"], d: { e: "${kb}" } },
      { n: { default: 5 }, kb: { default: "docs" } },
    );
    expect(filled).toEqual({ a: 5, b: "top 5 of docs", c: ["${missing}"], d: { e: "docs" } });
  });
});
