import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { categoryCounts, filterTemplates, parameterCount } from "./gallery";
import { TemplateGallery } from "./TemplateGallery";
import type { TemplateSummary } from "./types";

const template = (id: string, category: string, extra: Partial<TemplateSummary> = {}): TemplateSummary => ({
  id, title: id.replace(/-/g, " "), description: `About ${id}.`, category, blocks: [], parameters: {}, ...extra,
});

const LIBRARY = [
  template("document-qa", "research", { blocks: ["retrieve", "llm"], parameters: { knowledge_base: { default: "docs" }, top_k: { default: 4 } } }),
  template("risk-alert-triage", "risk", { blocks: ["classifier", "approval", "http"], description: "Rates a risk alert." }),
  template("market-news-digest", "trading", { blocks: ["http", "llm"] }),
  template("daily-report", "operations", { blocks: ["llm"], schedule: { cron: "0 7 * * 1-5", timezone: "UTC" } }),
];

const ids = (list: TemplateSummary[]) => list.map((t) => t.id);

describe("template search", () => {
  it("finds by title, description, block and parameter, every word, any case", () => {
    expect(ids(filterTemplates(LIBRARY, "", ""))).toEqual(ids(LIBRARY));
    expect(ids(filterTemplates(LIBRARY, "RISK alert", ""))).toEqual(["risk-alert-triage"]);
    expect(ids(filterTemplates(LIBRARY, "approval", ""))).toEqual(["risk-alert-triage"]);
    expect(ids(filterTemplates(LIBRARY, "top_k", ""))).toEqual(["document-qa"]);
    expect(ids(filterTemplates(LIBRARY, "llm", ""))).toEqual(["document-qa", "market-news-digest", "daily-report"]);
    expect(ids(filterTemplates(LIBRARY, "llm  http", ""))).toEqual(["market-news-digest"]);
    expect(filterTemplates(LIBRARY, "nothing like this", "")).toEqual([]);
  });

  it("filters by category, with the search", () => {
    expect(ids(filterTemplates(LIBRARY, "", "trading"))).toEqual(["market-news-digest"]);
    expect(ids(filterTemplates(LIBRARY, "llm", "research"))).toEqual(["document-qa"]);
    expect(filterTemplates(LIBRARY, "approval", "research")).toEqual([]);
  });

  it("offers the categories that have templates, known ones first, with counts", () => {
    const more = [...LIBRARY, template("x", "zeta"), template("y", "research")];
    expect(categoryCounts(more)).toEqual([["trading", 1], ["risk", 1], ["research", 2], ["operations", 1], ["zeta", 1]]);
    expect(categoryCounts([])).toEqual([]);
  });

  it("says how many parameters a template asks", () => {
    expect(LIBRARY.map(parameterCount)).toEqual(["2 parameters", "No parameters", "No parameters", "No parameters"]);
    expect(parameterCount(template("one", "risk", { parameters: { a: {} } }))).toBe("1 parameter");
  });
});

const render = (props: Partial<Parameters<typeof TemplateGallery>[0]>) =>
  renderToStaticMarkup(
    <TemplateGallery status="success" templates={LIBRARY} error={null} onRetry={() => {}} onChoose={() => {}} onClose={() => {}} {...props} />,
  );

describe("the template gallery", () => {
  it("shows a card per template: title, category, description, blocks, parameters, a button", () => {
    const html = render({});
    expect(html).toContain('aria-labelledby="wf-gallery-title"');
    expect(html.match(/<article/g)).toHaveLength(LIBRARY.length);
    expect(html).toContain('<h3 id="wf-gallery-document-qa">document qa</h3>');
    expect(html).toContain('aria-label="Blocks of document qa"><li><code>retrieve</code></li><li><code>llm</code></li></ul>');
    expect(html).toContain("2 parameters");
    expect(html).toContain("Suggests a schedule");
    expect(html).toContain('<span class="badge warn">Risk</span>');
    expect(html).toContain('aria-label="Use the template risk alert triage"');
    expect(html).toContain('<input id="wf-gallery-search" type="search"');
    expect(html).toContain('aria-pressed="true">All <span class="muted">4</span>');
    expect(html).toContain("4 templates");
  });

  it("has loading, error and empty states", () => {
    expect(render({ status: "pending", templates: undefined })).toContain("Loading templates…");
    const failed = render({ status: "error", templates: undefined, error: new Error("boom") });
    expect(failed).toContain('role="alert"');
    expect(failed).toContain("Could not load the templates: boom");
    expect(failed).toContain("Try again");
    expect(render({ templates: [] })).toContain("No templates are installed on this server.");
  });
});
