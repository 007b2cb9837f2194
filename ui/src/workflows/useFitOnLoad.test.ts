import { describe, expect, it } from "vitest";
import { fitDue } from "./useFitOnLoad";

describe("when a load's fit is due", () => {
  it("waits until React Flow has measured the loaded blocks", () => {
    // A 300-block import: its blocks are in the store, not measured yet.
    expect(fitDue(2, 1, false, 300)).toBe(false);
    expect(fitDue(2, 1, true, 300)).toBe(true);
  });

  it("fits once per load, not on later changes", () => {
    // Started: the blocks' later changes (a drag, a new block) do not fit again.
    expect(fitDue(2, 2, true, 300)).toBe(false);
    expect(fitDue(2, 2, true, 301)).toBe(false);
    // The next load is due again.
    expect(fitDue(3, 2, true, 3)).toBe(true);
  });

  it("fits an empty graph at once (it has nothing to measure)", () => {
    expect(fitDue(2, 1, false, 0)).toBe(true);
  });
});
