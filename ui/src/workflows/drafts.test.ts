import { describe, expect, it } from "vitest";
import { draftKey, readDraft, writeDraft } from "./drafts";
import { parameterValue } from "./TemplatePanel";
import { shortcutFor } from "./shortcuts";
import { portsKey } from "./usePorts";

class MemoryStorage {
  items = new Map<string, string>();
  getItem = (key: string) => this.items.get(key) ?? null;
  setItem = (key: string, value: string) => void this.items.set(key, value);
}

describe("the draft kept in the browser", () => {
  it("round-trips the definition and what the server holds", () => {
    const storage = new MemoryStorage();
    const definition = { name: "w", nodes: [{ id: "start", type: "start" }], edges: [] };
    const base = { text: "{}", version: 2, publishedText: "{}" };
    writeDraft(storage, "ann", JSON.stringify(definition), base, new Date("2026-01-02T03:04:05Z"));
    expect(readDraft(storage, "ann")).toEqual({ definition, base, savedAt: "2026-01-02T03:04:05.000Z" });
    // Another user of the same browser does not get it.
    expect(readDraft(storage, "bob")).toBeNull();
  });
  it("ignores what is not a draft", () => {
    const storage = new MemoryStorage();
    expect(readDraft(storage, "ann")).toBeNull();
    storage.setItem(draftKey("ann"), "{not json");
    expect(readDraft(storage, "ann")).toBeNull();
    storage.setItem(draftKey("ann"), JSON.stringify({ definition: { name: "w" } }));
    expect(readDraft(storage, "ann")).toBeNull();
  });
  it("survives a storage that refuses to write", () => {
    const full = { setItem: () => { throw new DOMException("full", "QuotaExceededError"); } };
    expect(() => writeDraft(full, "ann", "{}", null)).not.toThrow();
  });
});

describe("shortcuts", () => {
  const key = (k: string, mods: Partial<Record<"ctrlKey" | "metaKey" | "shiftKey" | "altKey", boolean>> = {}) =>
    ({ key: k, ctrlKey: false, metaKey: false, shiftKey: false, altKey: false, ...mods });
  it("maps keys to actions, Ctrl or Cmd alike", () => {
    expect(shortcutFor(key("z", { ctrlKey: true }), false)).toBe("undo");
    expect(shortcutFor(key("Z", { metaKey: true, shiftKey: true }), false)).toBe("redo");
    expect(shortcutFor(key("y", { ctrlKey: true }), false)).toBe("redo");
    expect(shortcutFor(key("c", { metaKey: true }), false)).toBe("copy");
    expect(shortcutFor(key("v", { ctrlKey: true }), false)).toBe("paste");
    expect(shortcutFor(key("?"), false)).toBe("help");
    expect(shortcutFor(key("c"), false)).toBeNull();
    expect(shortcutFor(key("c", { ctrlKey: true, altKey: true }), false)).toBeNull();
  });
  it("leaves a field's own keys alone, except save", () => {
    expect(shortcutFor(key("z", { ctrlKey: true }), true)).toBeNull();
    expect(shortcutFor(key("v", { ctrlKey: true }), true)).toBeNull();
    expect(shortcutFor(key("?"), true)).toBeNull();
    expect(shortcutFor(key("s", { ctrlKey: true }), true)).toBe("save");
  });
});

describe("small helpers", () => {
  it("reads a template parameter as the default's type", () => {
    expect(parameterValue("8", 4)).toBe(8);
    expect(parameterValue("docs", "kb")).toBe("docs");
    expect(parameterValue("not json", 4)).toBe("not json");
    expect(parameterValue('["a"]', [])).toEqual(["a"]);
  });
  it("keys ports by type and config", () => {
    expect(portsKey({ type: "end", config: { a: 1 } })).not.toBe(portsKey({ type: "end", config: { a: 2 } }));
    expect(portsKey({ type: "end" })).toBe(portsKey({ type: "end", config: {} }));
  });
});
