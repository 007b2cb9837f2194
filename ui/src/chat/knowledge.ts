/** Knowledge bases in the chat: a conversation asks one through the `rag/<name>` model. */
import { useQuery } from "@tanstack/react-query";
import { apiJson } from "../api/client";
import type { ListOf } from "../api/types";

export const RAG_PREFIX = "rag/";

export interface KnowledgeBase {
  id: string;
  name: string;
  description?: string | null;
}

/** A passage an answer was written from, as the server gives it (plus its text). */
export interface Citation {
  number: number;
  document_id: string;
  chunk_id: string;
  title: string | null;
  section: string | null;
  page: number | null;
  score: number;
  snippet: string;
  link: string | null;
  uri: string | null;
  text?: string | null;
}

/** The chat model that asks a knowledge base. */
export function ragModel(kb: string): string {
  return `${RAG_PREFIX}${kb}`;
}

/** The knowledge base a chat model asks, or null for a plain model. */
export function kbOf(model: string): string | null {
  return model.startsWith(RAG_PREFIX) ? model.slice(RAG_PREFIX.length) || null : null;
}

/** Where a citation can be opened: its link when it is a web address, else none. */
export function openableLink(citation: Citation): string | null {
  for (const candidate of [citation.link, citation.uri]) {
    if (!candidate) continue;
    try {
      const url = new URL(candidate);
      if (url.protocol === "https:" || url.protocol === "http:") return url.href;
    } catch {
      // A file name or a relative path: nothing a browser can open.
    }
  }
  return null;
}

/** What a citation is called on screen: its document, section and page. */
export function citationLabel(citation: Citation): string {
  const parts = [citation.title || citation.uri || citation.document_id];
  if (citation.section) parts.push(citation.section);
  if (citation.page != null) parts.push(`p. ${citation.page}`);
  return parts.join(" · ");
}

/** Passages the server gave as `context` ({number, text}) joined to their citations. */
export function withTexts(
  citations: Citation[],
  context: { number: number; text: string }[] | undefined,
): Citation[] {
  if (!context?.length) return citations;
  const byNumber = new Map(context.map((c) => [c.number, c.text]));
  return citations.map((c) => ({ ...c, text: byNumber.get(c.number) ?? c.text ?? null }));
}

export function useKnowledgeBases() {
  return useQuery({
    queryKey: ["knowledge-bases"],
    queryFn: async () =>
      (await apiJson<ListOf<KnowledgeBase>>("/v1/knowledge-bases")).data,
    staleTime: 60_000,
  });
}
