import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Markdown } from "./Markdown";

const render = (text: string) => renderToStaticMarkup(<Markdown text={text} />);

describe("Markdown", () => {
  it("renders code blocks and tables", () => {
    const html = render("```python\nprint('hi')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
    expect(html).toContain('<code class="language-python">');
    expect(html).toContain("<table>");
    expect(html).toContain("<td>2</td>");
  });

  const hostile = [
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    '<a href="javascript:alert(1)">x</a>',
    "<iframe src=\"https://evil.example\"></iframe>",
    '<svg onload="alert(1)"><circle/></svg>',
    "![x](javascript:alert(1))",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "<form action=\"https://evil.example\"><input name=q></form>",
  ];

  it.each(hostile)("never renders anything that can run script: %s", (payload) => {
    const html = render(payload).toLowerCase();
    expect(html).not.toMatch(/<script|<iframe|<svg|<form|<input|\son\w+=|javascript:|data:text\/html|style=/);
  });

  it("opens links in a new tab without an opener", () => {
    const html = render("[docs](https://example.com/docs)");
    expect(html).toContain('href="https://example.com/docs"');
    expect(html).toContain('rel="noopener noreferrer nofollow"');
  });
});
