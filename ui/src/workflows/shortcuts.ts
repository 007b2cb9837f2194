/** The builder's keyboard shortcuts: one table for the handler and the help. */

export type ShortcutAction = "undo" | "redo" | "copy" | "paste" | "cut" | "save" | "selectAll" | "help";

export const SHORTCUTS: { keys: string; action: ShortcutAction | "delete"; what: string }[] = [
  { keys: "Ctrl/⌘ Z", action: "undo", what: "Undo" },
  { keys: "Ctrl/⌘ Y, Ctrl/⌘ Shift Z", action: "redo", what: "Redo" },
  { keys: "Ctrl/⌘ C", action: "copy", what: "Copy the selected blocks (with the edges among them)" },
  { keys: "Ctrl/⌘ X", action: "cut", what: "Cut the selected blocks" },
  { keys: "Ctrl/⌘ V", action: "paste", what: "Paste blocks" },
  { keys: "Ctrl/⌘ A", action: "selectAll", what: "Select every block" },
  { keys: "Delete, Backspace", action: "delete", what: "Delete the selected blocks or edges" },
  { keys: "Ctrl/⌘ S", action: "save", what: "Save the draft to the server" },
  { keys: "?", action: "help", what: "Show these shortcuts" },
];

interface Key {
  key: string;
  ctrlKey: boolean;
  metaKey: boolean;
  shiftKey: boolean;
  altKey: boolean;
}

/** The action a key press asks for, or null. Typing in a field keeps every key but save. */
export function shortcutFor(event: Key, typing: boolean): ShortcutAction | null {
  const mod = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (mod && !event.altKey && key === "s") return "save";
  if (typing) return null;
  if (!mod) return event.key === "?" ? "help" : null;
  if (event.altKey) return null;
  if (key === "z") return event.shiftKey ? "redo" : "undo";
  const plain: Record<string, ShortcutAction> = { y: "redo", c: "copy", x: "cut", v: "paste", a: "selectAll" };
  return event.shiftKey ? null : plain[key] ?? null;
}
