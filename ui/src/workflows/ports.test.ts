import { describe, expect, it } from "vitest";
import { CONTROL_IN, connectionProblem, parseType, portsFromAnswer, startPorts, typeFits, type NodePorts } from "./ports";

describe("typeFits", () => {
  it("follows the server's rules", () => {
    expect(typeFits("string", "string")).toBe(true);
    expect(typeFits("integer", "number")).toBe(true);
    expect(typeFits("number", "integer")).toBe(false);
    expect(typeFits("string", "number")).toBe(false);
    expect(typeFits("any", "object")).toBe(true);
    expect(typeFits("boolean", "any")).toBe(true);
    expect(typeFits("array[integer]", "array[number]")).toBe(true);
    expect(typeFits("array[string]", "array[object]")).toBe(false);
    expect(typeFits("array", "array[string]")).toBe(true);
    expect(typeFits("strin", "string")).toBe(false);
  });
  it("parses array types and refuses unknown ones", () => {
    expect(parseType("array[array[string]]")).toEqual(["array", "array[string]"]);
    expect(parseType("object[string]")).toBeNull();
    expect(parseType("array[nope]")).toBeNull();
  });
});

describe("ports from the server", () => {
  it("reads an answer, leaving out the controls every block has", () => {
    const answer = {
      type: "condition",
      inputs: { value: { type: "any", required: false } },
      outputs: { value: { type: "any", required: false }, result: { type: "boolean" } },
      controls: ["done", "error", "true", "false"],
    };
    expect(portsFromAnswer(answer)).toEqual({
      inputs: [{ name: "value", type: "any", required: false }],
      outputs: [{ name: "value", type: "any", required: false }, { name: "result", type: "boolean", required: true }],
      controls: ["true", "false"],
    });
    expect(portsFromAnswer({ type: "transform", error: { message: "expressions: Field required" } })).toBeNull();
  });
  it("gives a Start the workflow's inputs as outputs", () => {
    const inputs = { text: { type: "string" }, n: { type: "integer", required: false } };
    expect(startPorts(inputs).outputs).toEqual([
      { name: "text", type: "string", required: true },
      { name: "n", type: "integer", required: false },
    ]);
  });
});

describe("connectionProblem", () => {
  const ports: Record<string, NodePorts> = {
    start: { inputs: [], outputs: [{ name: "text", type: "string", required: true }], controls: [] },
    cond: { inputs: [{ name: "value", type: "any", required: false }], outputs: [{ name: "result", type: "boolean", required: true }], controls: ["true", "false"] },
    map: { inputs: [{ name: "items", type: "array", required: true }], outputs: [], controls: [] },
  };
  const lookup = (id: string) => ports[id];
  const check = (source: string, sourceHandle: string, target: string, targetHandle: string | null, edges = []) =>
    connectionProblem({ source, sourceHandle, target, targetHandle }, lookup, edges);

  it("accepts compatible ports and control edges", () => {
    expect(check("start", "text", "cond", "value")).toBeNull();
    expect(check("cond", "true", "map", CONTROL_IN)).toBeNull();
    expect(check("start", "done", "map", null)).toBeNull();
  });
  it("refuses with the reason", () => {
    expect(check("start", "text", "map", "items")).toBe(
      "Type mismatch: start.text is string, but map.items takes array.",
    );
    expect(check("cond", "true", "map", "items")).toMatch(/carries no value/);
    expect(check("start", "text", "map", CONTROL_IN)).toMatch(/must go to an input/);
    expect(check("start", "text", "start", null)).toMatch(/itself/);
    expect(check("start", "nope", "cond", "value")).toMatch(/no output "nope"/);
    const taken = [{ source: "x", source_handle: "v", target: "cond", target_handle: "value" }];
    expect(connectionProblem({ source: "start", sourceHandle: "text", target: "cond", targetHandle: "value" }, lookup, taken)).toMatch(/already connected/);
  });
});
