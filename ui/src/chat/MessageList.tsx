import { useEffect, useRef } from "react";
import type { ChatMessage } from "../api/types";
import { Markdown } from "../markdown/Markdown";
import { ATTACHMENT_MARK } from "./attachments";
import { CitationList } from "./Citations";
import { Feedback } from "./Feedback";
import type { Citation } from "./knowledge";

interface Props {
  messages: ChatMessage[];
  streaming: string | null;
  /** The passages of the answer being written (a knowledge base's), shown as they come. */
  streamingCitations: Citation[];
  canRegenerate: boolean;
  onRegenerate: () => void;
  onOpenCitation: (citation: Citation) => void;
  onRated: (index: number, message: ChatMessage) => void;
}

/** The citations kept with an answer (the conversation store keeps them in its meta). */
export function citationsOf(message: ChatMessage): Citation[] {
  const kept = message.meta?.citations;
  return Array.isArray(kept) ? (kept as unknown as Citation[]) : [];
}

export function MessageList(props: Props) {
  const { messages, streaming, streamingCitations, canRegenerate, onRegenerate } = props;
  const end = useRef<HTMLDivElement>(null);
  useEffect(() => {
    end.current?.scrollIntoView?.({ block: "end" });
  }, [messages.length, streaming]);
  const last = messages.length - 1;
  return (
    <div className="messages" aria-label="Messages" role="log" aria-busy={streaming !== null}>
      {messages.map((message, index) => {
        const citations = message.role === "assistant" ? citationsOf(message) : [];
        return (
          <article
            key={index}
            className={`message ${message.role}${citations.length ? " with-citations" : ""}`}
            aria-label={message.role}
          >
            <div className="message-body">
              {message.role === "assistant" ? (
                <Markdown text={message.content} />
              ) : message.meta?.[ATTACHMENT_MARK] ? (
                <AttachmentChip message={message} />
              ) : (
                <p className="plain">{message.content}</p>
              )}
              <MessageMeta message={message} />
              {message.role === "assistant" && !message.meta?.error && message.content && (
                <Feedback message={message} onRated={(rated) => props.onRated(index, rated)} />
              )}
              {index === last && message.role === "assistant" && canRegenerate && (
                <button type="button" className="ghost small" onClick={onRegenerate}>
                  ↻ {message.meta?.error ? "Retry" : "Regenerate"}
                </button>
              )}
            </div>
            <CitationList citations={citations} onOpen={props.onOpenCitation} />
          </article>
        );
      })}
      {streaming !== null && (
        <article
          className={`message assistant streaming${streamingCitations.length ? " with-citations" : ""}`}
          aria-label="assistant (writing)"
        >
          <div className="message-body">
            {streaming ? (
              <Markdown text={streaming} />
            ) : (
              <p className="muted" role="status">
                <span className="spinner" aria-hidden="true" /> Thinking…
              </p>
            )}
          </div>
          <CitationList citations={streamingCitations} onOpen={props.onOpenCitation} />
        </article>
      )}
      <div ref={end} />
    </div>
  );
}

function AttachmentChip({ message }: { message: ChatMessage }) {
  const meta = message.meta ?? {};
  return (
    <p className="attachment-chip" data-testid="attachment">
      <span className="muted">Document</span> <strong>{String(meta[ATTACHMENT_MARK])}</strong>{" "}
      <span className="muted">
        attached{meta.truncated ? " (cut to the first part)" : ""} — the next questions are asked with it
      </span>
    </p>
  );
}

function MessageMeta({ message }: { message: ChatMessage }) {
  const meta = message.meta;
  if (!meta || meta[ATTACHMENT_MARK]) return null;
  return (
    <footer className="message-meta">
      {meta.model ? <span>{String(meta.model)}</span> : null}
      {meta.stopped ? <span>stopped</span> : null}
      {meta.error ? (
        <span className="error" role="alert">
          {String(meta.error)}
        </span>
      ) : null}
    </footer>
  );
}
