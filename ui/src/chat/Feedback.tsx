import { type FormEvent, useId, useState } from "react";
import { describeError } from "../api/client";
import type { ChatMessage } from "../api/types";
import { type Rating, rated, sendFeedback } from "./feedback";

interface Props {
  message: ChatMessage;
  /** Keep the rated message in the conversation. */
  onRated: (message: ChatMessage) => void;
}

/** Thumbs up or down on an answer, with an optional comment. */
export function Feedback({ message, onRated }: Props) {
  const given = message.meta?.rating as Rating | undefined;
  const [choice, setChoice] = useState<Rating | null>(null);
  const [comment, setComment] = useState("");
  const [sending, setSending] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const commentId = useId();

  async function submit(event?: FormEvent) {
    event?.preventDefault();
    if (!choice) return;
    setSending(true);
    setError(null);
    try {
      await sendFeedback(message, choice, comment);
      onRated(rated(message, choice, comment));
      setChoice(null);
    } catch (caught) {
      setError(`The feedback was not sent: ${describeError(caught)}`);
    } finally {
      setSending(false);
    }
  }

  if (given && !choice) {
    return (
      <span className="feedback-given" data-testid="feedback-given">
        {given === "up" ? "▲ Helpful" : "▼ Not helpful"}: thanks for the feedback
      </span>
    );
  }
  return (
    <div className="feedback">
      <button
        type="button"
        className={`ghost small${choice === "up" ? " chosen" : ""}`}
        aria-pressed={choice === "up"}
        aria-label="Good answer"
        onClick={() => setChoice("up")}
      >
        ▲ Good
      </button>
      <button
        type="button"
        className={`ghost small${choice === "down" ? " chosen" : ""}`}
        aria-pressed={choice === "down"}
        aria-label="Bad answer"
        onClick={() => setChoice("down")}
      >
        ▼ Bad
      </button>
      {choice && (
        <form className="feedback-form" onSubmit={(e) => void submit(e)} aria-label="Feedback">
          <label htmlFor={commentId} className="visually-hidden">
            Comment (optional)
          </label>
          <input
            id={commentId}
            placeholder={choice === "up" ? "What was good? (optional)" : "What was wrong? (optional)"}
            value={comment}
            maxLength={4000}
            onChange={(e) => setComment(e.target.value)}
          />
          <button type="submit" className="small primary" disabled={sending}>
            Send feedback
          </button>
          <button type="button" className="small ghost" onClick={() => setChoice(null)}>
            Cancel
          </button>
        </form>
      )}
      {error && (
        <span className="error" role="alert">
          {error}
        </span>
      )}
    </div>
  );
}
