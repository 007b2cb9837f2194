/** A block's config JSON Schema -> the fields of its form, and each field's text -> value. */
import type { JsonSchema } from "./types";

export type FieldKind = "string" | "text" | "number" | "integer" | "boolean" | "enum" | "json";

export interface FormField {
  name: string;
  label: string;
  kind: FieldKind;
  required: boolean;
  description: string;
  /** The choices of an enum field. */
  options: string[];
  default: unknown;
  schema: JsonSchema;
}

/** Follows a local `$ref` (`#/$defs/Name`) inside the root schema. */
function resolve(schema: JsonSchema, root: JsonSchema): JsonSchema {
  if (!schema.$ref) return schema;
  const name = schema.$ref.replace(/^#\/\$defs\//, "");
  return { ...(root.$defs?.[name] ?? {}), ...schema, $ref: undefined };
}

/** `anyOf: [X, {type: null}]` (pydantic's Optional) -> X. */
function unwrapOptional(schema: JsonSchema, root: JsonSchema): JsonSchema {
  const options = schema.anyOf?.map((s) => resolve(s, root)).filter((s) => s.type !== "null");
  if (options && options.length === 1) {
    return { ...options[0], title: schema.title, description: schema.description ?? options[0].description, default: schema.default };
  }
  return schema;
}

function kindOf(schema: JsonSchema): FieldKind {
  if (schema.enum && schema.enum.every((v) => typeof v === "string")) return "enum";
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== "null") : schema.type;
  switch (type) {
    case "string":
      return (schema.maxLength ?? 0) > 200 || /template|prompt|body|message/i.test(schema.title ?? "") ? "text" : "string";
    case "number":
    case "integer":
    case "boolean":
      return type;
    default:
      // Objects, arrays, unions and untyped values: edited as JSON text.
      return "json";
  }
}

const humanize = (name: string) => name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());

/** The fields of a config schema, in the schema's order. */
export function fieldsOf(root: JsonSchema): FormField[] {
  const required = new Set(root.required ?? []);
  return Object.entries(root.properties ?? {}).map(([name, raw]) => {
    const schema = unwrapOptional(resolve(raw, root), root);
    return {
      name,
      label: schema.title ?? humanize(name),
      kind: kindOf(schema),
      required: required.has(name),
      description: schema.description ?? "",
      options: (schema.enum ?? []).map(String),
      default: schema.default,
      schema,
    };
  });
}

/** The text a field shows for a value. */
export function fieldText(field: FormField, value: unknown): string {
  if (value === undefined || value === null) return "";
  if (field.kind === "json") return JSON.stringify(value, null, 2);
  return String(value);
}

export type Parsed = { ok: true; value: unknown } | { ok: false; error: string };

function checkRange(schema: JsonSchema, n: number): string | null {
  if (schema.minimum !== undefined && n < schema.minimum) return `Must be at least ${schema.minimum}.`;
  if (schema.maximum !== undefined && n > schema.maximum) return `Must be at most ${schema.maximum}.`;
  if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum) return `Must be more than ${schema.exclusiveMinimum}.`;
  if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum) return `Must be less than ${schema.exclusiveMaximum}.`;
  return null;
}

function parseJson(field: FormField, text: string): Parsed {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, error: "Not valid JSON." };
  }
  const type = field.schema.type;
  if (type === "object" && (typeof value !== "object" || value === null || Array.isArray(value))) {
    return { ok: false, error: "Must be a JSON object ({...})." };
  }
  if (type === "array" && !Array.isArray(value)) return { ok: false, error: "Must be a JSON list ([...])." };
  const min = field.schema.minProperties;
  if (min !== undefined && value && typeof value === "object" && Object.keys(value).length < min) {
    return { ok: false, error: `Needs at least ${min} entr${min === 1 ? "y" : "ies"}.` };
  }
  return { ok: true, value };
}

/** The value of a field's text; `undefined` (left out) when an optional field is empty. */
export function parseField(field: FormField, text: string): Parsed {
  const trimmed = text.trim();
  if (!trimmed && field.kind !== "boolean") {
    return field.required ? { ok: false, error: "Required." } : { ok: true, value: undefined };
  }
  switch (field.kind) {
    case "number":
    case "integer": {
      const n = Number(trimmed);
      if (!Number.isFinite(n)) return { ok: false, error: "Must be a number." };
      if (field.kind === "integer" && !Number.isInteger(n)) return { ok: false, error: "Must be a whole number." };
      const range = checkRange(field.schema, n);
      return range ? { ok: false, error: range } : { ok: true, value: n };
    }
    case "boolean":
      return { ok: true, value: trimmed === "true" };
    case "enum":
      return field.options.includes(trimmed)
        ? { ok: true, value: trimmed }
        : { ok: false, error: `One of: ${field.options.join(", ")}.` };
    case "json":
      return parseJson(field, trimmed);
    default: {
      const { minLength, maxLength } = field.schema;
      if (minLength !== undefined && text.length < minLength) return { ok: false, error: `At least ${minLength} characters.` };
      if (maxLength !== undefined && text.length > maxLength) return { ok: false, error: `At most ${maxLength} characters.` };
      return { ok: true, value: text };
    }
  }
}

/** A run's input as a form field, from the workflow's typed input. */
export function inputField(name: string, spec: { type?: string; required?: boolean; default?: unknown; description?: string }): FormField {
  const type = (spec.type ?? "any").trim();
  const kind: FieldKind = ["string", "number", "integer", "boolean"].includes(type) ? (type as FieldKind) : "json";
  const schemaType = type.startsWith("array") ? "array" : type === "object" ? "object" : undefined;
  return {
    name,
    label: name,
    kind,
    required: (spec.required ?? true) && spec.default == null,
    description: spec.description ?? "",
    options: [],
    default: spec.default,
    schema: { type: schemaType },
  };
}
