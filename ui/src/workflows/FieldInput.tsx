/** One generated form field: text, number, checkbox, choice or JSON, with its error. */
import { useEffect, useRef, useState } from "react";
import { type FormField, fieldText, parseField } from "./schemaForm";

interface Props {
  idPrefix: string;
  field: FormField;
  value: unknown;
  /** Called with a valid value (undefined: leave the field out). */
  onCommit: (value: unknown) => void;
  serverError?: string;
  /** Gives the parent a way to insert text at the caret (the variable picker). */
  onRegisterInsert?: (insert: (text: string) => void) => void;
  onFocusField?: () => void;
}

export function FieldInput({ idPrefix, field, value, onCommit, serverError, onRegisterInsert, onFocusField }: Props) {
  const [text, setText] = useState(() => fieldText(field, value ?? field.default));
  const [error, setError] = useState<string | null>(null);
  const element = useRef<HTMLInputElement & HTMLTextAreaElement>(null);
  const latest = useRef(text);
  latest.current = text;
  const id = `${idPrefix}-${field.name}`;
  const shownError = error ?? serverError ?? null;

  function commit(next: string) {
    const parsed = parseField(field, next);
    setError(parsed.ok ? null : parsed.error);
    if (parsed.ok) onCommit(parsed.value);
  }

  useEffect(() => {
    onRegisterInsert?.((inserted) => {
      const current = latest.current;
      const at = element.current;
      const start = at?.selectionStart ?? current.length;
      const end = at?.selectionEnd ?? current.length;
      const next = current.slice(0, start) + inserted + current.slice(end);
      setText(next);
      commit(next);
      window.requestAnimationFrame(() => at?.setSelectionRange(start + inserted.length, start + inserted.length));
    });
  });

  const common = {
    id,
    onFocus: onFocusField,
    "aria-invalid": shownError ? true : undefined,
    "aria-describedby": `${id}-help`,
  } as const;
  let control;
  if (field.kind === "boolean") {
    control = (
      <input
        {...common}
        type="checkbox"
        checked={text === "true"}
        onChange={(event) => {
          const next = String(event.target.checked);
          setText(next);
          commit(next);
        }}
      />
    );
  } else if (field.kind === "enum") {
    control = (
      <select {...common} value={text} onChange={(event) => { setText(event.target.value); commit(event.target.value); }}>
        {!field.required && <option value="">(default)</option>}
        {field.options.map((option) => <option key={option} value={option}>{option}</option>)}
      </select>
    );
  } else if (field.kind === "json" || field.kind === "text") {
    control = (
      <textarea
        {...common}
        ref={element}
        rows={field.kind === "json" ? 4 : 3}
        spellCheck={field.kind !== "json"}
        className={field.kind === "json" ? "mono" : undefined}
        value={text}
        placeholder={field.kind === "json" ? "JSON" : undefined}
        onChange={(event) => setText(event.target.value)}
        onBlur={() => commit(text)}
      />
    );
  } else {
    control = (
      <input
        {...common}
        ref={element}
        type={field.kind === "string" ? "text" : "number"}
        step={field.kind === "integer" ? 1 : "any"}
        value={text}
        onChange={(event) => setText(event.target.value)}
        onBlur={() => commit(text)}
      />
    );
  }
  return (
    <div className={`wf-field${field.kind === "boolean" ? " inline" : ""}`}>
      <label htmlFor={id}>
        {field.label}
        {field.required && <span aria-hidden="true"> *</span>}
      </label>
      {control}
      <small id={`${id}-help`} className={shownError ? "error" : "muted"} role={shownError ? "alert" : undefined}>
        {shownError ?? field.description}
      </small>
    </div>
  );
}
