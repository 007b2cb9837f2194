import { describe, expect, it } from "vitest";
import type { ChatMessage } from "../api/types";
import { attachmentMessage, attachmentProblem } from "./attachments";
import { feedbackRequests, rated } from "./feedback";
import { type Citation, citationLabel, kbOf, openableLink, ragModel, withTexts } from "./knowledge";
import { ragExtras } from "./stream";

const citation: Citation = {
  number: 1,
  document_id: "doc_1",
  chunk_id: "chk_1",
  title: "Handbook",
  section: "Leave",
  page: 4,
  score: 0.8123,
  snippet: "Staff get 30 days…",
  link: "/v1/knowledge-bases/hr/documents/doc_1",
  uri: "https://intranet.example/handbook",
};

describe("knowledge bases as chat models", () => {
  it("round-trips the rag/ alias", () => {
    expect(ragModel("hr")).toBe("rag/hr");
    expect(kbOf("rag/hr")).toBe("hr");
    expect(kbOf("smol")).toBeNull();
    expect(kbOf("rag/")).toBeNull();
  });

  it("opens only web addresses", () => {
    expect(openableLink(citation)).toBe("https://intranet.example/handbook");
    expect(openableLink({ ...citation, uri: "handbook.md" })).toBeNull();
    expect(openableLink({ ...citation, link: "javascript:alert(1)", uri: null })).toBeNull();
    expect(openableLink({ ...citation, link: "http://docs.example/a", uri: null })).toBe("http://docs.example/a");
  });

  it("labels a citation by document, section and page", () => {
    expect(citationLabel(citation)).toBe("Handbook · Leave · p. 4");
    expect(citationLabel({ ...citation, title: null, section: null, page: null, uri: null })).toBe("doc_1");
  });

  it("joins passage texts to citations by number", () => {
    const joined = withTexts([citation, { ...citation, number: 2, chunk_id: "chk_2" }], [{ number: 2, text: "whole" }]);
    expect(joined.map((c) => c.text ?? null)).toEqual([null, "whole"]);
  });
});

describe("ragExtras", () => {
  it("reads citations and the query id from the first chunk only", () => {
    const first = JSON.stringify({ choices: [{ delta: { content: "" } }], citations: [citation], query_id: "q_1" });
    expect(ragExtras(first)).toEqual({ citations: [citation], queryId: "q_1" });
    expect(ragExtras(JSON.stringify({ choices: [{ delta: { content: "query_id" } }] }))).toBeNull();
    expect(ragExtras('{"choices":[{"delta":{"content":"x"}}]}')).toBeNull();
  });
});

describe("feedback", () => {
  const kbAnswer: ChatMessage = {
    role: "assistant",
    content: "30 days [1].",
    meta: { model: "rag/hr", asked: "rag/hr", query_id: "q_1" },
  };

  it("rates a plain answer's model, or its route arm", () => {
    const plain: ChatMessage = { role: "assistant", content: "Hi", meta: { model: "smol-internal", asked: "smol" } };
    expect(feedbackRequests(plain, "up", "nice")).toEqual([{ path: "/v1/feedback", body: { model: "smol", rating: "up" } }]);
    const routed = { ...plain, meta: { ...plain.meta, routed_to: "smol-v2" } };
    expect(feedbackRequests(routed, "down", "")[0].body.model).toBe("smol-v2");
  });

  it("sends a knowledge-base answer's rating and comment to its knowledge base", () => {
    expect(feedbackRequests(kbAnswer, "down", "  wrong number  ")).toEqual([
      { path: "/v1/knowledge-bases/hr/feedback", body: { query_id: "q_1", rating: "down", comment: "wrong number" } },
    ]);
    const routed = { ...kbAnswer, meta: { ...kbAnswer.meta, routed_to: "smol-v1" } };
    expect(feedbackRequests(routed, "up", "").map((r) => r.path)).toEqual([
      "/v1/feedback",
      "/v1/knowledge-bases/hr/feedback",
    ]);
    expect(feedbackRequests({ ...kbAnswer, meta: { model: "rag/hr" } }, "up", "")).toEqual([]);
  });

  it("keeps the rating with the message", () => {
    expect(rated(kbAnswer, "down", "bad").meta).toMatchObject({ rating: "down", feedback_comment: "bad" });
    expect(rated(kbAnswer, "up", " ").meta).not.toHaveProperty("feedback_comment");
  });
});

describe("attachments", () => {
  const limits = { max_bytes: 1024, max_chars: 100, extensions: [".md", ".pdf", ".txt"] };

  it("checks type and size before sending", () => {
    expect(attachmentProblem({ name: "notes.MD", size: 10 }, limits)).toBeNull();
    expect(attachmentProblem({ name: "photo.png", size: 10 }, limits)).toMatch(/cannot be read/);
    expect(attachmentProblem({ name: "README", size: 10 }, limits)).toMatch(/cannot be read/);
    expect(attachmentProblem({ name: "big.pdf", size: 4096 }, limits)).toBe("big.pdf is 4 KB; at most 1 KB can be attached.");
    expect(attachmentProblem({ name: "empty.txt", size: 0 }, limits)).toBe("empty.txt is empty.");
  });

  it("turns a read document into a message that carries its text", () => {
    const message = attachmentMessage({
      filename: "policy.md", doc_type: "markdown", bytes: 40, chars: 20, truncated: false, text: "Leave: 30 days",
    });
    expect(message.role).toBe("user");
    expect(message.content).toContain("policy.md");
    expect(message.content.endsWith("Leave: 30 days")).toBe(true);
    expect(message.meta).toEqual({ attachment: "policy.md", doc_type: "markdown", bytes: 40, truncated: false });
  });
});
