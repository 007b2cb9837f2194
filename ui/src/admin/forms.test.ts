import { describe, expect, it } from "vitest";
import { ApiError } from "../api/client";
import { checkExperiment, checkLimits, checkTeam, checkUser, isValid, optionalInt, placeError } from "./forms";

describe("placeError", () => {
  const fields = ["username", "password", "rpm"] as const;
  it("puts a server error beside the field its param names, however deep", () => {
    expect(placeError(new ApiError(400, "taken", "username_taken", "username"), fields)).toEqual({
      field: "username", message: "taken",
    });
    expect(placeError(new ApiError(400, "too small", null, "body.rpm"), fields).field).toBe("rpm");
  });
  it("sends errors without a known field to the form", () => {
    expect(placeError(new ApiError(400, "bad", null, "colour"), fields)).toEqual({ field: null, message: "bad" });
    expect(placeError(new ApiError(500, "boom"), fields).field).toBeNull();
    expect(placeError(new TypeError("fetch failed"), fields)).toEqual({
      field: null, message: "Atrium could not be reached. Check your connection.",
    });
  });
});

describe("checkUser", () => {
  const good = { username: "alice", password: "long enough pw", role: "user", display_name: "" };
  it("accepts a good user", () => expect(isValid(checkUser(good))).toBe(true));
  it("names every bad field", () => {
    const errors = checkUser({ username: "-x", password: "short", role: "owner", display_name: "x".repeat(201) });
    expect(Object.keys(errors).sort()).toEqual(["display_name", "password", "role", "username"]);
    expect(checkUser({ ...good, username: "  " }).username).toBe("Give the user a username.");
  });
});

describe("limits and teams", () => {
  it("reads blanks as no limit and rejects what is not a positive number", () => {
    expect(optionalInt(" ")).toBeNull();
    expect(optionalInt("12")).toBe(12);
    expect(optionalInt("1.5")).toBeNaN();
    const { errors, limits } = checkLimits({ rpm: "60", tpm: "", budget_usd: "12.50", budget_period: "month" });
    expect(errors).toEqual({});
    expect(limits).toEqual({ rpm: 60, tpm: null, budget_usd: 12.5, budget_period: "month" });
    const bad = checkLimits({ rpm: "0", tpm: "-3", budget_usd: "abc", budget_period: "" });
    expect(Object.keys(bad.errors).sort()).toEqual(["budget_usd", "rpm", "tpm"]);
  });
  it("wants a period with a budget and a team name", () => {
    expect(checkLimits({ rpm: "", tpm: "", budget_usd: "5", budget_period: "" }).errors.budget_period).toMatch(/period/);
    const team = checkTeam({ name: " search ", rpm: "", tpm: "", budget_usd: "", budget_period: "" });
    expect(team.errors).toEqual({});
    expect(team.body.name).toBe("search");
    expect(checkTeam({ name: "", rpm: "", tpm: "", budget_usd: "", budget_period: "" }).errors.name).toBeTruthy();
  });
});

describe("checkExperiment", () => {
  const good = { name: "chat-ab", a: "smol", b: "smol-v2", split: "10", alpha: ".05" };
  it("accepts a good experiment and reads its numbers", () => {
    const { errors, body } = checkExperiment(good);
    expect(errors).toEqual({});
    expect(body).toEqual({ name: "chat-ab", a: "smol", b: "smol-v2", split: 10, alpha: 0.05 });
  });
  it("refuses the same model twice, a split out of range and a bad name", () => {
    const { errors } = checkExperiment({ ...good, name: "Chat AB", b: "smol", split: "100", alpha: "0.5" });
    expect(Object.keys(errors).sort()).toEqual(["alpha", "b", "name", "split"]);
  });
});
