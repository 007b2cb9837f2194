/** Starting from a template: its parameters in a form, checked before the canvas is filled. */
import { useState } from "react";
import type { TemplateDetail } from "./types";

interface Props {
  template: TemplateDetail;
  onCreate: (values: Record<string, unknown>) => void;
  onCancel: () => void;
}

const shown = (value: unknown) => (value === undefined || value === null ? "" : typeof value === "string" ? value : JSON.stringify(value));

/** A parameter's text as its value: JSON where it reads as JSON of the default's type. */
export function parameterValue(text: string, fallback: unknown): unknown {
  if (typeof fallback === "string" || fallback === undefined) return text;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

export function TemplatePanel({ template, onCreate, onCancel }: Props) {
  const entries = Object.entries(template.parameters ?? {});
  const [values, setValues] = useState<Record<string, string>>(() =>
    Object.fromEntries(entries.map(([name, p]) => [name, shown(p.default)])),
  );
  const [errors, setErrors] = useState<Record<string, string>>({});
  function submit() {
    const missing = Object.fromEntries(
      entries.filter(([name, p]) => p.required && !values[name]?.trim()).map(([name]) => [name, "Give this parameter a value."]),
    );
    setErrors(missing);
    if (Object.keys(missing).length) return;
    onCreate(Object.fromEntries(entries.map(([name, p]) => [name, parameterValue(values[name] ?? "", p.default)])));
  }
  return (
    <section className="wf-panel" aria-label={`Template ${template.title}`}>
      <h2>{template.title}</h2>
      <p className="muted">{template.description}</p>
      <form aria-label="Template parameters" onSubmit={(event) => { event.preventDefault(); submit(); }}>
        {entries.length === 0 && <p className="muted">This template has no parameters.</p>}
        {entries.map(([name, p]) => (
          <div className="wf-field" key={name}>
            <label htmlFor={`tpl-${name}`}>{name}{p.required && <span aria-hidden="true"> *</span>}</label>
            <input
              id={`tpl-${name}`}
              value={values[name] ?? ""}
              aria-invalid={errors[name] ? true : undefined}
              aria-describedby={`tpl-${name}-help`}
              onChange={(event) => setValues((old) => ({ ...old, [name]: event.target.value }))}
            />
            <small id={`tpl-${name}-help`} className={errors[name] ? "error" : "muted"} role={errors[name] ? "alert" : undefined}>
              {errors[name] ?? p.description}
            </small>
          </div>
        ))}
        <button type="submit" className="primary">Start from this template</button>{" "}
        <button type="button" onClick={onCancel}>Cancel</button>
      </form>
    </section>
  );
}
