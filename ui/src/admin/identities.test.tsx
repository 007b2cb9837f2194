import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { providerName, unbindQuestion, unboundMessage } from "./identities";
import { unbindPath } from "./queries";
import { IdentityList } from "./UserIdentities";
import type { UserIdentity } from "./types";

const GOOGLE: UserIdentity = { issuer: "https://accounts.google.com", subject: "10769150350006150715", created_at: "2026-11-29T10:00:00+00:00" };
const OKTA: UserIdentity = { issuer: "https://firm.okta.com/oauth2/default", subject: "00u1abc", created_at: "2026-11-29T11:00:00+00:00" };

describe("sign-in identities in words", () => {
  it("names the provider as the login button does", () => {
    expect(providerName(GOOGLE.issuer)).toBe("Google");
    expect(providerName(OKTA.issuer)).toBe("firm.okta.com");
    expect(providerName("http://127.0.0.1:8123")).toBe("127.0.0.1:8123");
    expect(providerName("not a url")).toBe("not a url");
  });

  it("asks before unbinding, naming every provider once", () => {
    expect(unbindQuestion("alice@firm.example", [GOOGLE])).toBe(
      "Unbind alice@firm.example from Google? Their next sign-in there is matched by e-mail address and binds the account again.",
    );
    expect(unbindQuestion("bob", [GOOGLE, OKTA, { ...GOOGLE, subject: "2" }])).toMatch(/^Unbind bob from Google and firm\.okta\.com\? /);
    expect(unbindQuestion("carol", [])).toMatch(/^Unbind carol from their identity provider\? /);
  });

  it("tells what the server unbound", () => {
    expect(unboundMessage("alice", 1)).toBe("Unbound 1 sign-in identity from alice.");
    expect(unboundMessage("alice", 2)).toBe("Unbound 2 sign-in identities from alice.");
    expect(unboundMessage("alice", 0)).toBe("alice had no sign-in identities left to unbind.");
  });
});

const render = (props: Partial<Parameters<typeof IdentityList>[0]>) =>
  renderToStaticMarkup(
    <IdentityList username="alice" userId="u1" identities={[GOOGLE, OKTA]} pending={false} failure={null} onUnbind={() => {}} {...props} />,
  );

describe("the identity list", () => {
  it("shows each bound subject with its provider and issuer, and a labelled Unbind button", () => {
    const html = render({});
    expect(html).toContain('aria-label="Sign-in identities of alice"');
    expect(html.match(/<tr data-issuer=/g)).toHaveLength(2);
    expect(html).toContain("<td>Google <small class=\"muted\">https://accounts.google.com</small></td><td><code>10769150350006150715</code></td>");
    expect(html).toContain("firm.okta.com <small");
    expect(html).toContain('<button type="button" class="small danger" aria-label="Unbind the sign-in identities of alice">Unbind all</button>');
    expect(html).not.toContain('role="alert"');
  });

  it("has an Unbind button in each identity's row, named by the user and provider", () => {
    const html = render({});
    const rows = html.match(/<tr data-issuer=.*?<\/tr>/g) ?? [];
    expect(rows).toHaveLength(2);
    expect(rows[0]).toContain('<button type="button" class="small danger" aria-label="Unbind alice from Google (https://accounts.google.com)">Unbind</button>');
    expect(rows[1]).toContain('aria-label="Unbind alice from firm.okta.com (https://firm.okta.com/oauth2/default)">Unbind</button>');
  });

  it("unbinds one identity by its issuer and subject, or all without them", () => {
    expect(unbindPath("u 1")).toBe("/v1/admin/users/u%201/identities");
    expect(unbindPath("u1", OKTA)).toBe(
      "/v1/admin/users/u1/identities?issuer=https%3A%2F%2Ffirm.okta.com%2Foauth2%2Fdefault&subject=00u1abc",
    );
  });

  it("shows the server's refusal beside the button, tied to it", () => {
    const html = render({ failure: "admin scope required" });
    // Every Unbind button (each row's and the one for all) is tied to it.
    expect(html.match(/aria-describedby="unbind-error-u1"/g)).toHaveLength(3);
    expect(html).toContain('<p class="error" role="alert" id="unbind-error-u1">Could not unbind: admin scope required</p>');
  });

  it("cannot be pressed twice while unbinding", () => {
    const html = render({ pending: true });
    expect(html).toMatch(/<button type="button" class="small danger" disabled="" [^>]*>Unbinding…<\/button>/);
    expect(html.match(/disabled=""/g)).toHaveLength(3);
  });
});
