/**
 * Incremental parser of a server-sent event stream (the OpenAI streaming format).
 * Bytes arrive in arbitrary chunks: an event may be split anywhere, even inside a
 * multi-byte character, and several events may arrive in one chunk.
 */
export interface SseEvent {
  event: string;
  data: string;
}

export class SseParser {
  private buffer = "";
  private decoder = new TextDecoder();

  /** Feed a chunk; returns the events it completed. */
  push(chunk: Uint8Array | string): SseEvent[] {
    this.buffer +=
      typeof chunk === "string" ? chunk : this.decoder.decode(chunk, { stream: true });
    const events: SseEvent[] = [];
    // Events end with a blank line; accept \n, \r\n and \r line ends.
    this.buffer = this.buffer.replace(/\r\n?/g, "\n");
    let end = this.buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const event = parseBlock(block);
      if (event) events.push(event);
      end = this.buffer.indexOf("\n\n");
    }
    return events;
  }

  /** The event left when the stream ended without a final blank line, if any. */
  flush(): SseEvent[] {
    const rest = this.buffer + this.decoder.decode();
    this.buffer = "";
    const event = parseBlock(rest.replace(/\r\n?/g, "\n").trimEnd());
    return event ? [event] : [];
  }
}

function parseBlock(block: string): SseEvent | null {
  let event = "message";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // comments keep the connection alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") data.push(value);
    else if (field === "event") event = value;
  }
  return data.length ? { event, data: data.join("\n") } : null;
}

/** What one chunk of a streamed chat completion adds. */
export interface ChatDelta {
  content: string;
  finishReason: string | null;
  model?: string;
}

export class StreamError extends Error {}

/** Decode one `data:` payload of /v1/chat/completions; null for the final [DONE]. */
export function chatDelta(data: string): ChatDelta | null {
  if (data.trim() === "[DONE]") return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch {
    throw new StreamError("The server sent a malformed event.");
  }
  const body = parsed as {
    error?: { message?: string };
    model?: string;
    choices?: { delta?: { content?: string | null }; finish_reason?: string | null }[];
  };
  if (body.error) throw new StreamError(body.error.message ?? "The model failed.");
  const choice = body.choices?.[0];
  return {
    content: choice?.delta?.content ?? "",
    finishReason: choice?.finish_reason ?? null,
    model: body.model,
  };
}
