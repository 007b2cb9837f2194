import { type ChangeEvent, type FormEvent, type KeyboardEvent, useRef } from "react";

interface Props {
  draft: string;
  onDraft: (text: string) => void;
  onSend: () => void;
  onStop: () => void;
  /** A document chosen to attach ("analyze this"); absent: no attach button. */
  onAttach?: (file: File) => void;
  /** The file name extensions the server reads (for the file picker). */
  accept?: string[];
  attaching?: boolean;
  streaming: boolean;
  disabled: boolean;
}

export function Composer(props: Props) {
  const { draft, onDraft, onSend, onStop, onAttach, streaming, disabled } = props;
  const picker = useRef<HTMLInputElement>(null);
  function submit(event: FormEvent) {
    event.preventDefault();
    if (!streaming && draft.trim() && !disabled) onSend();
  }
  function keyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      submit(event);
    }
  }
  function chosen(event: ChangeEvent<HTMLInputElement>) {
    const file = event.target.files?.[0];
    event.target.value = ""; // the same file can be chosen again
    if (file) onAttach?.(file);
  }
  return (
    <form className="composer" onSubmit={submit}>
      <label htmlFor="composer-input" className="visually-hidden">
        Message
      </label>
      {onAttach && (
        <>
          <label htmlFor="attach-input" className="visually-hidden">
            Attach a document
          </label>
          <input
            ref={picker}
            id="attach-input"
            type="file"
            className="visually-hidden"
            accept={props.accept?.join(",")}
            onChange={chosen}
            disabled={streaming || props.attaching}
          />
          <button
            type="button"
            className="ghost"
            title="Attach a document to ask about"
            aria-label="Attach"
            disabled={streaming || props.attaching || disabled}
            onClick={() => picker.current?.click()}
          >
            {props.attaching ? <span className="spinner" aria-hidden="true" /> : "+ File"}
          </button>
        </>
      )}
      <textarea
        id="composer-input"
        rows={3}
        placeholder="Ask anything. Enter sends, Shift+Enter adds a line."
        value={draft}
        onChange={(e) => onDraft(e.target.value)}
        onKeyDown={keyDown}
      />
      {streaming ? (
        <button type="button" onClick={onStop}>
          ■ Stop
        </button>
      ) : (
        <button type="submit" className="primary" disabled={disabled || !draft.trim()}>
          Send
        </button>
      )}
    </form>
  );
}
