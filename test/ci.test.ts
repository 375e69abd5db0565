// The CI rule of the GPU suites: any non-empty CI variable is CI, so that a GPU suite cannot skip
// under CI=1 or CI=github; an unset or empty CI is not.
import { describe, expect, it } from "vitest";
import { isCI } from "./helpers.ts";

describe("isCI", () => {
  it.each(["true", "1", "yes", "github", "false"])("CI=%s is CI", (value) => {
    expect(isCI({ CI: value })).toBe(true);
  });
  it("an unset or empty CI is not", () => {
    expect(isCI({})).toBe(false);
    expect(isCI({ CI: "" })).toBe(false);
    expect(isCI({ CI: undefined, GITHUB_ACTIONS: "true" })).toBe(false);
  });
  it("reads process.env by default", () => {
    expect(isCI()).toBe((process.env.CI ?? "") !== "");
  });
});
