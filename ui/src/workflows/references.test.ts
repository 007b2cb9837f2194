import { describe, expect, it } from "vitest";
import type { NodePorts } from "./ports";
import { languageOf, referenceText, upstreamOf, variablesFor } from "./references";

const edges = [
  { source: "start", target: "fetch" },
  { source: "fetch", target: "sum-up" },
  { source: "other", target: "end" },
  { source: "sum-up", target: "end" },
];
const out = (...names: string[]): NodePorts => ({ inputs: [], outputs: names.map((name) => ({ name, type: "string", required: true })), controls: [] });

describe("variables from upstream", () => {
  it("walks every block a node runs after, nearest first", () => {
    expect(upstreamOf("end", edges)).toEqual(["other", "sum-up", "fetch", "start"]);
    expect(upstreamOf("start", edges)).toEqual([]);
    expect(upstreamOf("a", [{ source: "a", target: "b" }, { source: "b", target: "a" }])).toEqual(["b"]);
  });
  it("lists upstream outputs, then the workflow's inputs and variables", () => {
    const ports = new Map([["fetch", out("body")], ["sum-up", out("text")], ["start", out("q")]]);
    const types = new Map([["start", "start"], ["fetch", "http_request"], ["sum-up", "llm"]]);
    const found = variablesFor("end", edges.slice(0, 2).concat(edges[3]), ports, types, { q: { type: "string" } }, { tone: "dry" });
    expect(found.map((v) => v.path)).toEqual(['nodes["sum-up"].text', "nodes.fetch.body", "inputs.q", "vars.tone"]);
  });
  it("writes each reference in the syntax of its field", () => {
    const variable = { node: "sum-up", name: "text", type: "string", path: 'nodes["sum-up"].text' };
    expect(referenceText(variable, "template")).toBe('{{ nodes["sum-up"].text }}');
    expect(referenceText(variable, "jinja")).toBe('nodes["sum-up"].text');
    expect(referenceText(variable, "jmespath")).toBe('nodes."sum-up".text');
    expect(referenceText({ node: null, name: "q", type: "string", path: "inputs.q" }, "jmespath")).toBe("inputs.q");
    expect(languageOf("llm", "prompt", {})).toBe("template");
    expect(languageOf("transform", "expressions", {})).toBe("jmespath");
    expect(languageOf("condition", "expression", { language: "jinja" })).toBe("jinja");
  });
});
