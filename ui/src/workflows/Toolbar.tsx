/** The builder's toolbar: name, open, the template gallery, import / export, undo / redo, save, publish,
 * history and the shortcuts' help. */
import { useRef, useState } from "react";
import { createPortal } from "react-dom";
import { useTemplates } from "./api";
import { TemplateGallery } from "./TemplateGallery";
import type { Workflow } from "./types";

interface Props {
  name: string;
  onName: (name: string) => void;
  workflows: Workflow[];
  onOpen: (name: string) => void;
  onTemplate: (id: string) => void;
  onNew: () => void;
  onImport: (text: string) => void;
  onExport: () => void;
  undo: { can: boolean; run: () => void };
  redo: { can: boolean; run: () => void };
  onPublish: () => void;
  onSave: () => void;
  busy: "publishing" | "saving" | null;
  onHistory: () => void;
  onShortcuts: () => void;
  status: string;
}

export function Toolbar(props: Props) {
  const file = useRef<HTMLInputElement>(null);
  const [gallery, setGallery] = useState(false);
  const templates = useTemplates();
  return (
    <div className="wf-toolbar" role="toolbar" aria-label="Workflow">
      <label className="visually-hidden" htmlFor="wf-name">Workflow name</label>
      <input
        id="wf-name"
        key={props.name}
        defaultValue={props.name}
        onBlur={(event) => event.target.value !== props.name && props.onName(event.target.value.trim())}
        onKeyDown={(event) => event.key === "Enter" && event.currentTarget.blur()}
      />
      <button type="button" onClick={props.onNew}>New</button>
      <label className="visually-hidden" htmlFor="wf-open">Open a workflow</label>
      <select id="wf-open" value="" onChange={(event) => event.target.value && props.onOpen(event.target.value)}>
        <option value="">Open…</option>
        {props.workflows.map((w) => (
          <option key={w.id} value={w.name}>{w.name}{w.published_version ? ` (v${w.published_version})` : " (draft)"}</option>
        ))}
      </select>
      <button type="button" aria-haspopup="dialog" aria-expanded={gallery} onClick={() => setGallery(true)}>
        Templates…
      </button>
      {gallery && createPortal(
        <TemplateGallery
          status={templates.status}
          templates={templates.data}
          error={templates.error}
          onRetry={() => void templates.refetch()}
          onChoose={props.onTemplate}
          onClose={() => setGallery(false)}
        />,
        document.body,
      )}
      <button type="button" onClick={() => file.current?.click()}>Import YAML</button>
      <input
        ref={file}
        type="file"
        accept=".yaml,.yml,.json,application/yaml,application/json"
        hidden
        aria-label="YAML file to import"
        onChange={async (event) => {
          const chosen = event.target.files?.[0];
          event.target.value = "";
          if (chosen) props.onImport(await chosen.text());
        }}
      />
      <button type="button" onClick={props.onExport}>Export YAML</button>
      <span className="wf-toolbar-sep" />
      <button type="button" onClick={props.undo.run} disabled={!props.undo.can} aria-keyshortcuts="Control+Z" title="Undo (Ctrl+Z)">Undo</button>
      <button type="button" onClick={props.redo.run} disabled={!props.redo.can} aria-keyshortcuts="Control+Shift+Z" title="Redo (Ctrl+Shift+Z)">Redo</button>
      <button type="button" onClick={props.onHistory}>History</button>
      <button type="button" onClick={props.onShortcuts} aria-keyshortcuts="?" title="Keyboard shortcuts (?)">Shortcuts</button>
      <span className="wf-save-status muted" role="status" aria-live="polite" data-testid="save-status">{props.status}</span>
      <button type="button" onClick={props.onSave} disabled={props.busy !== null} aria-keyshortcuts="Control+S" title="Save the draft (Ctrl+S)">
        {props.busy === "saving" ? "Saving…" : "Save draft"}
      </button>
      <button type="button" className="primary" onClick={props.onPublish} disabled={props.busy !== null}>
        {props.busy === "publishing" ? "Publishing…" : "Publish"}
      </button>
    </div>
  );
}
