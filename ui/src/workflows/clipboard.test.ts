import { describe, expect, it } from "vitest";
import { copySelection, parseClip, pasteClip, removeSelected } from "./clipboard";
import { definitionToGraph } from "./graph";

const graph = () => {
  const g = definitionToGraph({
    name: "w",
    nodes: [
      { id: "start", type: "start", config: {}, position: { x: 0, y: 0 } },
      { id: "transform", type: "transform", config: { expressions: { a: "x" } }, position: { x: 100, y: 0 } },
      { id: "llm", type: "llm", config: { prompt: "{{ a }}" }, position: { x: 200, y: 0 } },
    ],
    edges: [
      { source: "start", source_handle: "x", target: "transform", target_handle: "data" },
      { source: "transform", source_handle: "a", target: "llm", target_handle: "text" },
    ],
  });
  g.nodes[1].selected = true;
  g.nodes[2].selected = true;
  return g;
};

describe("copy and paste", () => {
  it("copies the selected blocks and only the edges among them", () => {
    const clip = copySelection(graph());
    expect(clip?.nodes.map((n) => n.spec.id)).toEqual(["transform", "llm"]);
    expect(clip?.edges).toEqual([{ source: "transform", sourceHandle: "a", target: "llm", targetHandle: "text" }]);
    expect(copySelection(definitionToGraph({ name: "w", nodes: [{ id: "a", type: "end" }], edges: [] }))).toBeNull();
  });
  it("pastes under fresh ids, offset, rewired, selected alone", () => {
    const g = graph();
    const clip = copySelection(g);
    if (!clip) throw new Error("nothing copied");
    const pasted = pasteClip(g, clip, 40);
    expect(pasted.nodes.map((n) => n.id)).toEqual(["start", "transform", "llm", "transform_2", "llm_2"]);
    expect(pasted.nodes.filter((n) => n.selected).map((n) => n.id)).toEqual(["transform_2", "llm_2"]);
    expect(pasted.nodes[3].position).toEqual({ x: 140, y: 40 });
    expect(pasted.nodes[3].data.spec).toEqual({ id: "transform_2", type: "transform", config: { expressions: { a: "x" } } });
    expect(pasted.edges.slice(2).map((e) => [e.source, e.sourceHandle, e.target, e.targetHandle])).toEqual([
      ["transform_2", "a", "llm_2", "text"],
    ]);
    // The copy is deep: editing the paste leaves the original alone.
    (pasted.nodes[3].data.spec.config as { expressions: Record<string, string> }).expressions.a = "changed";
    expect(g.nodes[1].data.spec.config).toEqual({ expressions: { a: "x" } });
  });
  it("cuts the selected blocks with their edges", () => {
    const cut = removeSelected(graph());
    expect(cut.nodes.map((n) => n.id)).toEqual(["start"]);
    expect(cut.edges).toEqual([]);
  });
  it("reads a stored clip back, refusing anything else", () => {
    const clip = copySelection(graph());
    expect(parseClip(JSON.stringify(clip))).toEqual(clip);
    expect(parseClip("{")).toBeNull();
    expect(parseClip('{"nodes": 1}')).toBeNull();
    expect(parseClip(null)).toBeNull();
  });
});
