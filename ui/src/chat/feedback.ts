/** Thumbs up or down on an answer: where it goes and what each endpoint is given. */
import { apiJson } from "../api/client";
import type { ChatMessage, MetaValue } from "../api/types";
import { kbOf } from "./knowledge";

export type Rating = "up" | "down";

export interface FeedbackRequest {
  path: string;
  body: Record<string, string>;
}

const MAX_COMMENT = 4000;

/**
 * The requests one rating makes:
 * - `POST /v1/feedback` rates the model that answered: the route arm named by the
 *   answer's x-atrium-routed-to header, or the plain model asked (A/B and release
 *   metrics). A knowledge base's alias is not a served model, so it is rated only
 *   through its arm.
 * - `POST /v1/knowledge-bases/{kb}/feedback` for a knowledge-base answer: its query id
 *   (the server kept the query and the passages retrieved for it), the rating and the
 *   comment; the knowledge base learns from it on similar questions.
 */
export function feedbackRequests(message: ChatMessage, rating: Rating, comment: string): FeedbackRequest[] {
  const meta = message.meta ?? {};
  // `asked`: the model the conversation asked (a public name); `model`: what answered.
  const asked = typeof meta.asked === "string" ? meta.asked : meta.model;
  const model = typeof asked === "string" ? asked : "";
  const arm = typeof meta.routed_to === "string" ? meta.routed_to : null;
  const kb = kbOf(model);
  const requests: FeedbackRequest[] = [];
  const rated = arm ?? (kb === null && model ? model : null);
  if (rated) requests.push({ path: "/v1/feedback", body: { model: rated, rating } });
  if (kb !== null && typeof meta.query_id === "string") {
    const body: Record<string, string> = { query_id: meta.query_id, rating };
    const text = comment.trim().slice(0, MAX_COMMENT);
    if (text) body.comment = text;
    requests.push({ path: `/v1/knowledge-bases/${encodeURIComponent(kb)}/feedback`, body });
  }
  return requests;
}

/** The message with its rating recorded (kept with the conversation). */
export function rated(message: ChatMessage, rating: Rating, comment: string): ChatMessage {
  const meta: Record<string, MetaValue> = { ...(message.meta ?? {}), rating };
  const text = comment.trim().slice(0, MAX_COMMENT);
  if (text) meta.feedback_comment = text;
  else delete meta.feedback_comment;
  return { ...message, meta };
}

/** Send a rating everywhere it counts; resolves when all were accepted. */
export async function sendFeedback(message: ChatMessage, rating: Rating, comment: string): Promise<void> {
  await Promise.all(
    feedbackRequests(message, rating, comment).map((r) =>
      apiJson(r.path, { method: "POST", body: JSON.stringify(r.body) }),
    ),
  );
}
