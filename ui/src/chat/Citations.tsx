import { useEffect, useRef } from "react";
import { type Citation, citationLabel, openableLink } from "./knowledge";

/** The passages an answer was written from, beside it; each opens in the drawer. */
export function CitationList({ citations, onOpen }: { citations: Citation[]; onOpen: (c: Citation) => void }) {
  if (!citations.length) return null;
  return (
    <aside className="citations" aria-label="Citations">
      <h3>Sources</h3>
      <ol>
        {citations.map((citation) => (
          <li key={citation.chunk_id} data-chunk-id={citation.chunk_id}>
            <button
              type="button"
              className="citation"
              onClick={() => onOpen(citation)}
              aria-label={`Open citation ${citation.number}: ${citationLabel(citation)}`}
            >
              <span className="citation-head">
                <span className="citation-number">[{citation.number}]</span>
                <span className="citation-doc">{citationLabel(citation)}</span>
                <span className="citation-score" title="Retrieval score">
                  {citation.score.toFixed(2)}
                </span>
              </span>
              <span className="citation-snippet">{citation.snippet}</span>
            </button>
          </li>
        ))}
      </ol>
    </aside>
  );
}

/** One cited passage opened: its whole text, where it comes from, a link when it has one. */
export function CitationDrawer({ citation, onClose }: { citation: Citation; onClose: () => void }) {
  const close = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    close.current?.focus();
    const onKey = (event: KeyboardEvent) => event.key === "Escape" && onClose();
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [onClose]);
  const link = openableLink(citation);
  return (
    <div className="citation-drawer" role="dialog" aria-modal="false" aria-label={`Citation ${citation.number}`}>
      <header>
        <h3>
          [{citation.number}] {citation.title || citation.uri || citation.document_id}
        </h3>
        <button ref={close} type="button" className="ghost small" onClick={onClose} aria-label="Close citation">
          ✕
        </button>
      </header>
      <dl className="citation-facts">
        {citation.section && (
          <>
            <dt>Section</dt>
            <dd>{citation.section}</dd>
          </>
        )}
        {citation.page != null && (
          <>
            <dt>Page</dt>
            <dd>{citation.page}</dd>
          </>
        )}
        <dt>Score</dt>
        <dd>{citation.score.toFixed(4)}</dd>
        {citation.uri && (
          <>
            <dt>Source</dt>
            <dd className="citation-uri">{citation.uri}</dd>
          </>
        )}
      </dl>
      <pre className="citation-text" data-testid="citation-text">
        {citation.text || citation.snippet}
      </pre>
      {link && (
        <a href={link} target="_blank" rel="noopener noreferrer">
          Open the source ↗
        </a>
      )}
    </div>
  );
}
