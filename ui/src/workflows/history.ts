/** An undo / redo stack of snapshots (pure: each operation returns a new stack). */

export interface History<T> {
  past: T[];
  present: T;
  future: T[];
}

/** How many steps back the builder keeps. */
export const HISTORY_LIMIT = 100;

export function startHistory<T>(present: T): History<T> {
  return { past: [], present, future: [] };
}

/** Record a new state; redo is lost, the oldest step dropped past the limit. */
export function push<T>(history: History<T>, next: T, limit = HISTORY_LIMIT): History<T> {
  if (Object.is(next, history.present)) return history;
  const past = [...history.past, history.present];
  return { past: past.length > limit ? past.slice(past.length - limit) : past, present: next, future: [] };
}

export function undo<T>(history: History<T>): History<T> {
  if (!history.past.length) return history;
  const previous = history.past[history.past.length - 1];
  return { past: history.past.slice(0, -1), present: previous, future: [history.present, ...history.future] };
}

export function redo<T>(history: History<T>): History<T> {
  if (!history.future.length) return history;
  const [next, ...future] = history.future;
  return { past: [...history.past, history.present], present: next, future };
}

export const canUndo = <T,>(history: History<T>) => history.past.length > 0;
export const canRedo = <T,>(history: History<T>) => history.future.length > 0;
