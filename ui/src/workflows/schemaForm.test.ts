import { describe, expect, it } from "vitest";
import { fieldText, fieldsOf, inputField, parseField } from "./schemaForm";
import type { JsonSchema } from "./types";

const schema: JsonSchema = {
  type: "object",
  required: ["expressions", "model"],
  $defs: { Mode: { type: "string", enum: ["fast", "slow"] } },
  properties: {
    model: { type: "string", title: "Model" },
    language: { type: "string", enum: ["jmespath", "jinja"], default: "jmespath" },
    max_tokens: { anyOf: [{ type: "integer", minimum: 1, maximum: 4096 }, { type: "null" }], title: "Max Tokens" },
    temperature: { type: "number", exclusiveMinimum: 0 },
    stream: { type: "boolean", default: false },
    mode: { $ref: "#/$defs/Mode" },
    expressions: { type: "object", additionalProperties: { type: "string" }, minProperties: 1 },
    tags: { type: "array", items: { type: "string" } },
  },
};

describe("fieldsOf", () => {
  it("maps each property to a field kind", () => {
    const fields = fieldsOf(schema);
    expect(fields.map((f) => [f.name, f.kind, f.required])).toEqual([
      ["model", "string", true],
      ["language", "enum", false],
      ["max_tokens", "integer", false],
      ["temperature", "number", false],
      ["stream", "boolean", false],
      ["mode", "enum", false],
      ["expressions", "json", true],
      ["tags", "json", false],
    ]);
    expect(fields[1].options).toEqual(["jmespath", "jinja"]);
    expect(fields[5].options).toEqual(["fast", "slow"]);
    expect(fields[2].label).toBe("Max Tokens");
    expect(fields[4].label).toBe("Stream");
  });
});

describe("parseField", () => {
  const field = (name: string) => fieldsOf(schema).find((f) => f.name === name)!;
  it("parses valid text", () => {
    expect(parseField(field("max_tokens"), "12")).toEqual({ ok: true, value: 12 });
    expect(parseField(field("max_tokens"), "")).toEqual({ ok: true, value: undefined });
    expect(parseField(field("expressions"), '{"out": "data"}')).toEqual({ ok: true, value: { out: "data" } });
    expect(parseField(field("stream"), "true")).toEqual({ ok: true, value: true });
    expect(parseField(field("language"), "jinja")).toEqual({ ok: true, value: "jinja" });
  });
  it("says what is wrong", () => {
    expect(parseField(field("model"), " ")).toEqual({ ok: false, error: "Required." });
    expect(parseField(field("max_tokens"), "1.5")).toEqual({ ok: false, error: "Must be a whole number." });
    expect(parseField(field("max_tokens"), "5000")).toEqual({ ok: false, error: "Must be at most 4096." });
    expect(parseField(field("temperature"), "0")).toEqual({ ok: false, error: "Must be more than 0." });
    expect(parseField(field("temperature"), "abc")).toEqual({ ok: false, error: "Must be a number." });
    expect(parseField(field("expressions"), "{out: 1}")).toEqual({ ok: false, error: "Not valid JSON." });
    expect(parseField(field("expressions"), "[]")).toEqual({ ok: false, error: "Must be a JSON object ({...})." });
    expect(parseField(field("expressions"), "{}")).toEqual({ ok: false, error: "Needs at least 1 entry." });
    expect(parseField(field("tags"), '{"a": 1}')).toEqual({ ok: false, error: "Must be a JSON list ([...])." });
    expect(parseField(field("language"), "python")).toEqual({ ok: false, error: "One of: jmespath, jinja." });
  });
  it("shows values as text", () => {
    expect(fieldText(field("expressions"), { a: "b" })).toBe('{\n  "a": "b"\n}');
    expect(fieldText(field("max_tokens"), undefined)).toBe("");
  });
  it("turns workflow inputs into fields", () => {
    expect(inputField("n", { type: "integer" }).kind).toBe("integer");
    expect(inputField("xs", { type: "array[string]" }).schema.type).toBe("array");
    expect(inputField("t", { type: "string", default: "hi" }).required).toBe(false);
    expect(parseField(inputField("xs", { type: "array[string]" }), "1")).toEqual({ ok: false, error: "Must be a JSON list ([...])." });
  });
});
