/** The builder's draft kept in this browser: written on every change, read back on load, so
 * a reload, a closed tab or an expired session never loses work. One per user, so a shared
 * browser does not show one person's draft to the next. */
import type { WorkflowDefinition } from "./types";

export const DRAFT_KEY = "atrium.workflows.draft";
export const CLIPBOARD_KEY = "atrium.workflows.clipboard";

/** What the server holds: its saved draft's text, the published version and its text. */
export interface DraftBase {
  text: string;
  version: number | null;
  publishedText: string | null;
}

export interface LocalDraft {
  definition: WorkflowDefinition;
  /** The server's state when the draft was last loaded or saved there. */
  base: DraftBase | null;
  savedAt: string;
}

export const draftKey = (user: string) => `${DRAFT_KEY}:${user}`;

export function readDraft(storage: Pick<Storage, "getItem">, user: string): LocalDraft | null {
  try {
    const draft = JSON.parse(storage.getItem(draftKey(user)) ?? "null") as LocalDraft | null;
    if (!draft || typeof draft.definition?.name !== "string" || !Array.isArray(draft.definition.nodes)) return null;
    return { definition: draft.definition, base: draft.base ?? null, savedAt: draft.savedAt };
  } catch {
    return null;
  }
}

/** Keep the draft; `definition` is its JSON text (already made to compare it, not made twice). */
export function writeDraft(
  storage: Pick<Storage, "setItem">,
  user: string,
  definition: string,
  base: LocalDraft["base"],
  now = new Date(),
): void {
  try {
    storage.setItem(draftKey(user), `{"definition":${definition},"base":${JSON.stringify(base)},"savedAt":"${now.toISOString()}"}`);
  } catch {
    // Storage full or disabled (private mode): the draft still lives in the page.
  }
}
