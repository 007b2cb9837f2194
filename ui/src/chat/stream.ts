import { apiFetch } from "../api/client";
import { SseParser, StreamError, chatDelta } from "../api/sse";
import type { ChatMessage } from "../api/types";
import { type Citation, withTexts } from "./knowledge";

export interface StreamResult {
  content: string;
  finishReason: string | null;
  model: string | null;
  /** The route arm that answered (x-atrium-routed-to): what A/B feedback rates. */
  routedTo: string | null;
  /** A knowledge-base answer's passages and its query id (for feedback); else empty/null. */
  citations: Citation[];
  queryId: string | null;
}

/** The extra fields a `rag/<kb>` stream carries on its first chunk. */
export interface RagExtras {
  citations: Citation[];
  queryId: string | null;
}

/** Citations and query id of one `data:` payload; null when it has none. Only a payload
 * that mentions them is parsed again, so plain token chunks cost nothing more. */
export function ragExtras(data: string): RagExtras | null {
  if (!data.includes('"query_id"')) return null;
  const body = JSON.parse(data) as {
    citations?: Citation[];
    context?: { number: number; text: string }[];
    query_id?: string;
  };
  if (body.query_id === undefined) return null;
  return { citations: withTexts(body.citations ?? [], body.context), queryId: body.query_id ?? null };
}

/**
 * Stream a chat completion, calling `onText` with the whole answer so far after each
 * chunk and `onCitations` once when a knowledge base's passages arrive. Throws on
 * failure (ApiError, StreamError, AbortError); the caller keeps what `onText` last gave.
 */
export async function streamChat(
  model: string,
  messages: ChatMessage[],
  signal: AbortSignal,
  onText: (text: string) => void,
  onCitations?: (citations: Citation[]) => void,
): Promise<StreamResult> {
  const response = await apiFetch("/v1/chat/completions", {
    method: "POST",
    body: JSON.stringify({
      model,
      stream: true,
      messages: messages.map(({ role, content }) => ({ role, content })),
    }),
    signal,
  });
  if (!response.body) throw new StreamError("The answer had no body.");
  const reader = response.body.getReader();
  const parser = new SseParser();
  const result: StreamResult = {
    content: "",
    finishReason: null,
    model: null,
    routedTo: response.headers.get("x-atrium-routed-to"),
    citations: [],
    queryId: null,
  };
  let done = false;
  while (!done) {
    const read = await reader.read();
    const events = read.done ? parser.flush() : parser.push(read.value);
    for (const event of events) {
      const delta = chatDelta(event.data);
      if (delta === null) {
        done = true;
        break;
      }
      const extras = result.queryId === null ? ragExtras(event.data) : null;
      if (extras) {
        result.citations = extras.citations;
        result.queryId = extras.queryId;
        onCitations?.(extras.citations);
      }
      result.content += delta.content;
      result.finishReason = delta.finishReason ?? result.finishReason;
      result.model = delta.model ?? result.model;
      if (delta.content) onText(result.content);
    }
    if (read.done && !done) {
      throw new StreamError("The connection dropped before the answer was complete.");
    }
  }
  return result;
}
