/** The template gallery: a modal dialog of cards (title, category, description, the blocks
 * a template uses, its parameters) with a search and category filters. Choosing a card
 * hands its id back; the builder then asks for its parameters or starts from it. */
import { useEffect, useRef, useState, type RefObject } from "react";
import { describeError } from "../api/client";
import { categoryCounts, filterTemplates, parameterCount } from "./gallery";
import type { TemplateSummary } from "./types";
import "./gallery.css";

interface Props {
  status: "pending" | "error" | "success";
  templates: TemplateSummary[] | undefined;
  error: unknown;
  onRetry: () => void;
  onChoose: (id: string) => void;
  onClose: () => void;
}

const TONES: Record<string, string> = { trading: "info", risk: "warn", research: "ok", operations: "muted" };
const label = (category: string) => category.charAt(0).toUpperCase() + category.slice(1);

export function TemplateGallery({ status, templates, error, onRetry, onChoose, onClose }: Props) {
  const dialog = useRef<HTMLDialogElement>(null);
  const search = useRef<HTMLInputElement>(null);
  useEffect(() => {
    // Modal: focus stays inside, Escape closes, and closing gives focus back to the opener.
    if (dialog.current && !dialog.current.open) dialog.current.showModal();
    search.current?.focus();
  }, []);
  const choose = (id: string) => {
    dialog.current?.close();
    onChoose(id);
  };
  return (
    // A click on the backdrop (the dialog itself: its body fills it) closes it too.
    <dialog
      ref={dialog}
      className="wf-gallery"
      aria-labelledby="wf-gallery-title"
      onClose={onClose}
      onClick={(event) => event.target === dialog.current && dialog.current?.close()}
      // The canvas's shortcuts (undo, delete, ?) listen on the window: not while this is open.
      onKeyDown={(event) => event.stopPropagation()}
    >
      <div className="wf-gallery-body">
        <div className="wf-gallery-head">
          <h2 id="wf-gallery-title">Start from a template</h2>
          <button type="button" onClick={() => dialog.current?.close()} aria-label="Close the template gallery">Close</button>
        </div>
        {status === "pending" ? (
          <p className="muted" role="status"><span className="spinner" aria-hidden="true" /> Loading templates…</p>
        ) : status === "error" ? (
          <div className="notice error" role="alert">
            <p>Could not load the templates: {describeError(error)}</p>
            <button type="button" onClick={onRetry}>Try again</button>
          </div>
        ) : !templates?.length ? (
          <p className="notice empty">No templates are installed on this server.</p>
        ) : (
          <GalleryBrowser templates={templates} onChoose={choose} searchRef={search} />
        )}
      </div>
    </dialog>
  );
}

function GalleryBrowser({ templates, onChoose, searchRef }: {
  templates: TemplateSummary[];
  onChoose: (id: string) => void;
  searchRef: RefObject<HTMLInputElement | null>;
}) {
  const [query, setQuery] = useState("");
  const [category, setCategory] = useState("");
  useEffect(() => {
    // The catalogue came after the dialog opened: the search takes the focus then.
    if (searchRef.current?.closest("dialog")?.open) searchRef.current.focus();
  }, [searchRef]);
  const shown = filterTemplates(templates, query, category);
  const clear = () => { setQuery(""); setCategory(""); searchRef.current?.focus(); };
  return (
    <>
      <div className="wf-gallery-filters" role="search" aria-label="Find a template">
        <label htmlFor="wf-gallery-search">Search templates</label>
        <input
          id="wf-gallery-search"
          ref={searchRef}
          type="search"
          value={query}
          placeholder="title, block, parameter…"
          onChange={(event) => setQuery(event.target.value)}
        />
        <div role="group" aria-label="Category" className="wf-gallery-categories">
          {[["", templates.length] as [string, number], ...categoryCounts(templates)].map(([c, n]) => (
            <button key={c || "all"} type="button" aria-pressed={category === c} onClick={() => setCategory(c)}>
              {c ? label(c) : "All"} <span className="muted">{n}</span>
            </button>
          ))}
        </div>
      </div>
      <p className="muted" role="status" aria-live="polite" data-testid="gallery-count">
        {shown.length === templates.length ? `${shown.length} templates` : `${shown.length} of ${templates.length} templates`}
      </p>
      {shown.length === 0 ? (
        <div className="notice empty">
          <p>No template matches{query.trim() ? ` “${query.trim()}”` : ""}{category ? ` in ${label(category)}` : ""}.</p>
          <button type="button" onClick={clear}>Clear the search</button>
        </div>
      ) : (
        <ul className="wf-gallery-grid" aria-label="Templates">
          {shown.map((t) => <li key={t.id}><TemplateCard template={t} onChoose={onChoose} /></li>)}
        </ul>
      )}
    </>
  );
}

function TemplateCard({ template, onChoose }: { template: TemplateSummary; onChoose: (id: string) => void }) {
  const heading = `wf-gallery-${template.id}`;
  const blocks = template.blocks ?? [];
  return (
    <article className="wf-gallery-card" aria-labelledby={heading} data-template={template.id}>
      <h3 id={heading}>{template.title}</h3>
      <p className="wf-gallery-meta">
        <span className={`badge ${TONES[template.category] ?? "muted"}`}>{label(template.category)}</span>
        <span className="muted">{parameterCount(template)}</span>
        {template.schedule && <span className="muted" title={`${template.schedule.cron} (${template.schedule.timezone})`}>Suggests a schedule</span>}
      </p>
      <p className="wf-gallery-description">{template.description}</p>
      {blocks.length > 0 && (
        <ul className="wf-gallery-blocks" aria-label={`Blocks of ${template.title}`}>
          {blocks.map((b) => <li key={b}><code>{b}</code></li>)}
        </ul>
      )}
      <button type="button" className="primary" onClick={() => onChoose(template.id)} aria-label={`Use the template ${template.title}`}>
        Use this template
      </button>
    </article>
  );
}
