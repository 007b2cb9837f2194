import { describe, expect, it } from "vitest";
import { type AuthProviders, providerHref, providerLabel, safeNext } from "./providers";

const google: AuthProviders = {
  object: "auth.providers",
  password: true,
  oidc: { name: "Google", login_url: "/v1/auth/oidc/login" },
};

describe("safeNext", () => {
  it.each([
    ["/workflows/abc?tab=runs", "/workflows/abc?tab=runs"],
    [null, "/chat"],
    ["", "/chat"],
    ["chat", "/chat"],
    ["//evil.example", "/chat"],
    ["/\\evil.example", "/chat"],
    ["https://evil.example", "/chat"],
    ["/a\nb", "/chat"],
  ])("%s -> %s", (next, expected) => {
    expect(safeNext(next)).toBe(expected);
  });
});

describe("providerHref", () => {
  it("is null when no provider is offered or the answer is not loaded", () => {
    expect(providerHref(undefined, null)).toBeNull();
    expect(providerHref({ ...google, oidc: null }, "/chat")).toBeNull();
  });

  it("sends the browser to the server's login route with a same-site next", () => {
    expect(providerHref(google, "/workflows?x=1")).toBe("/v1/auth/oidc/login?next=%2Fworkflows%3Fx%3D1");
    expect(providerHref(google, "//evil.example")).toBe("/v1/auth/oidc/login?next=%2Fchat");
  });

  it("never links outside the server's auth routes", () => {
    const odd = { ...google, oidc: { name: "x", login_url: "https://evil.example/login" } };
    expect(providerHref(odd, "/chat")).toBeNull();
  });
});

describe("providerLabel", () => {
  it("names the provider", () => {
    expect(providerLabel({ name: "Google", login_url: "/v1/auth/oidc/login" })).toBe("Sign in with Google");
    expect(providerLabel({ name: " ", login_url: "/v1/auth/oidc/login" })).toBe("Sign in with single sign-on");
  });
});
