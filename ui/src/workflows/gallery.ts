/** The template gallery's search: which templates a query and a category keep, and the
 * categories to offer. */
import type { TemplateSummary } from "./types";

/** Every category the server's library knows, in the order the gallery offers them. */
export const CATEGORIES = ["trading", "risk", "research", "operations"] as const;

/** What a template is found by: its title, description, id, category, blocks and
 * parameter names, lower-cased. */
function haystack(template: TemplateSummary): string {
  return [
    template.title, template.description, template.id, template.category,
    ...(template.blocks ?? []), ...Object.keys(template.parameters ?? {}),
  ].join(" ").toLowerCase();
}

/** The templates of ``category`` (blank: any) that contain every word of ``query``,
 * in the library's order. */
export function filterTemplates(templates: TemplateSummary[], query: string, category: string): TemplateSummary[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  return templates.filter((t) => (!category || t.category === category) && words.every((w) => haystack(t).includes(w)));
}

/** The categories to offer as filters: the known ones that have templates, then any
 * others the server sends, each with its count. */
export function categoryCounts(templates: TemplateSummary[]): [string, number][] {
  const counts = new Map<string, number>();
  for (const t of templates) counts.set(t.category, (counts.get(t.category) ?? 0) + 1);
  const known: string[] = CATEGORIES.filter((c) => counts.has(c));
  const others = [...counts.keys()].filter((c) => !known.includes(c)).sort();
  return [...known, ...others].map((c) => [c, counts.get(c) ?? 0]);
}

/** "2 parameters", "1 parameter", "No parameters". */
export function parameterCount(template: TemplateSummary): string {
  const n = Object.keys(template.parameters ?? {}).length;
  return n === 0 ? "No parameters" : `${n} parameter${n === 1 ? "" : "s"}`;
}
