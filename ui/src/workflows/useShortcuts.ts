/** The builder's keyboard shortcuts: undo / redo, copy / cut / paste, select all, save, help. */
import { useCallback, useEffect, useRef } from "react";
import { type Clip, PASTE_OFFSET, copySelection, parseClip, pasteClip, removeSelected } from "./clipboard";
import { CLIPBOARD_KEY } from "./drafts";
import type { Graph } from "./graph";
import type { GraphUpdate } from "./useGraphHistory";
import { type ShortcutAction, shortcutFor } from "./shortcuts";

interface Options {
  graph: Graph;
  change: (graph: GraphUpdate, record?: boolean) => void;
  undo: () => void;
  redo: () => void;
  save: () => Promise<void>;
  help: () => void;
  notify: (message: string) => void;
}

function isTyping(target: EventTarget | null): boolean {
  return target instanceof HTMLElement && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
}

/** The clip to paste: this page's (counting pastes, so each lands further off), or one
 * another tab copied (kept in localStorage). */
function nextPaste(mine: { clip: Clip; pastes: number } | null) {
  const stored = parseClip(window.localStorage.getItem(CLIPBOARD_KEY));
  if (mine && (!stored || JSON.stringify(stored) === JSON.stringify(mine.clip))) return mine;
  return stored && { clip: stored, pastes: 0 };
}

export function useShortcuts({ graph, change, undo, redo, save, help, notify }: Options): void {
  const clipboard = useRef<{ clip: Clip; pastes: number } | null>(null);

  const copy = useCallback((cut: boolean) => {
    const clip = copySelection(graph);
    if (!clip) return;
    clipboard.current = { clip, pastes: 0 };
    try {
      window.localStorage.setItem(CLIPBOARD_KEY, JSON.stringify(clip));
    } catch {
      // Storage off: the copy stays in this page.
    }
    notify(`${cut ? "Cut" : "Copied"} ${clip.nodes.length} block${clip.nodes.length === 1 ? "" : "s"}.`);
    if (cut) change(removeSelected(graph));
  }, [graph, change, notify]);

  const paste = useCallback(() => {
    const current = nextPaste(clipboard.current);
    if (!current) return;
    current.pastes += 1;
    clipboard.current = current;
    change(pasteClip(graph, current.clip, PASTE_OFFSET * current.pastes));
  }, [graph, change]);

  const run = useCallback((action: ShortcutAction) => {
    switch (action) {
      case "undo": return undo();
      case "redo": return redo();
      case "help": return help();
      case "save": return void save();
      case "copy": return copy(false);
      case "cut": return copy(true);
      case "paste": return paste();
      case "selectAll":
        return change({ ...graph, nodes: graph.nodes.map((n) => ({ ...n, selected: true })) }, false);
    }
  }, [graph, change, undo, redo, save, help, copy, paste]);

  useEffect(() => {
    const onKey = (event: KeyboardEvent) => {
      const action = shortcutFor(event, isTyping(event.target));
      if (!action) return;
      event.preventDefault();
      run(action);
    };
    window.addEventListener("keydown", onKey);
    return () => window.removeEventListener("keydown", onKey);
  }, [run]);
}
