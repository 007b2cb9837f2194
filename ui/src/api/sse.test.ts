import { describe, expect, it } from "vitest";
import { SseParser, StreamError, chatDelta } from "./sse";

const enc = new TextEncoder();

function chunk(content: string, finish: string | null = null): string {
  return `data: ${JSON.stringify({ model: "m", choices: [{ delta: { content }, finish_reason: finish }] })}\n\n`;
}

describe("SseParser", () => {
  it("parses events split at every byte", () => {
    const stream = enc.encode(chunk("Hé") + chunk("llo") + "data: [DONE]\n\n");
    const parser = new SseParser();
    const events = [];
    for (const byte of stream) events.push(...parser.push(new Uint8Array([byte])));
    expect(events.map((e) => e.data)).toHaveLength(3);
    expect(chatDelta(events[0].data)?.content).toBe("Hé");
    expect(chatDelta(events[2].data)).toBeNull();
  });

  it("parses several events in one chunk, CRLF lines and comments", () => {
    const parser = new SseParser();
    const events = parser.push(": ping\r\n\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\ndata: c\n\n");
    expect(events).toEqual([
      { event: "x", data: "a\nb" },
      { event: "message", data: "c" },
    ]);
  });

  it("keeps an unfinished event until it completes or the stream ends", () => {
    const parser = new SseParser();
    expect(parser.push("data: {\"par")).toEqual([]);
    expect(parser.push("tial\": 1}")).toEqual([]);
    expect(parser.flush()).toEqual([{ event: "message", data: '{"partial": 1}' }]);
    expect(parser.flush()).toEqual([]);
  });
});

describe("chatDelta", () => {
  it("reads content and the finish reason", () => {
    expect(chatDelta(JSON.stringify({ choices: [{ delta: {}, finish_reason: "stop" }] }))).toEqual({
      content: "",
      finishReason: "stop",
      model: undefined,
    });
  });

  it("turns an error event into a StreamError with the server's message", () => {
    const error = JSON.stringify({ error: { message: "model overloaded" } });
    expect(() => chatDelta(error)).toThrow(new StreamError("model overloaded"));
    expect(() => chatDelta("{not json")).toThrow(StreamError);
  });
});
