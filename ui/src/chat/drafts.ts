/** Unsent messages, kept per conversation in sessionStorage: a reload, or a detour to
 * the sign-in page when the session expires, never loses them. */
const PREFIX = "atrium:draft:";

export function loadDraft(conversation: string): string {
  try {
    return sessionStorage.getItem(PREFIX + conversation) ?? "";
  } catch {
    return "";
  }
}

export function saveDraft(conversation: string, text: string): void {
  try {
    if (text) sessionStorage.setItem(PREFIX + conversation, text);
    else sessionStorage.removeItem(PREFIX + conversation);
  } catch {
    // Storage full or disabled: the draft lives only in memory.
  }
}
