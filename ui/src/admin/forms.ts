/** Form checks for the admin console, and where a server error belongs (tested with Vitest).
 * Every form checks its fields before sending; when the server still refuses, its error
 * is shown next to the field it names (OpenAI's `param`), or above the form otherwise. */
import { ApiError, describeError } from "../api/client";

/** Field name -> the message to show beside it. */
export type FieldErrors<F extends string> = Partial<Record<F, string>>;

/** Where a refused request's message goes: beside `field`, or the whole form (null). */
export interface Placed<F extends string> {
  field: F | null;
  message: string;
}

/** Puts a server error beside the field its `param` names ("body.rpm", "rpm", "spec.a"
 * all match a field "rpm" / "a"); errors naming no known field go to the form. */
export function placeError<F extends string>(error: unknown, fields: readonly F[]): Placed<F> {
  const message = describeError(error);
  if (!(error instanceof ApiError) || !error.param) return { field: null, message };
  const parts = error.param.split(".");
  for (let i = parts.length - 1; i >= 0; i -= 1) {
    const found = fields.find((f) => f === parts[i]);
    if (found) return { field: found, message };
  }
  return { field: null, message };
}

/** A whole number typed into an optional field: null when blank, NaN when not one. */
export function optionalInt(text: string): number | null {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  return /^\d+$/.test(trimmed) ? Number(trimmed) : Number.NaN;
}

/** A decimal typed into an optional field: null when blank, NaN when not one. */
export function optionalNumber(text: string): number | null {
  const trimmed = text.trim();
  if (trimmed === "") return null;
  return /^\d+(\.\d+)?$/.test(trimmed) ? Number(trimmed) : Number.NaN;
}

// The server's rules (atrium/users): names are stored in lower case.
const USERNAME = /^[a-z0-9][a-z0-9._@+-]{0,99}$/i;
/** The shortest password any configuration accepts (web.password_min_length >= 8); a
 * longer configured minimum comes back from the server beside the password field. */
export const MIN_PASSWORD = 8;

export type UserField = "username" | "password" | "role" | "display_name";

export interface UserDraft {
  username: string;
  password: string;
  role: string;
  display_name: string;
}

/** What is wrong with a new user before it is sent (the server checks again). */
export function checkUser(draft: UserDraft): FieldErrors<UserField> {
  const errors: FieldErrors<UserField> = {};
  const name = draft.username.trim();
  if (!name) errors.username = "Give the user a username.";
  else if (!USERNAME.test(name)) {
    errors.username = "Use letters, digits and . _ @ + - (up to 100), starting with a letter or digit.";
  }
  if (draft.password.length < MIN_PASSWORD) errors.password = `At least ${MIN_PASSWORD} characters.`;
  if (!["admin", "builder", "user"].includes(draft.role)) errors.role = "Choose a role.";
  if (draft.display_name.length > 200) errors.display_name = "At most 200 characters.";
  return errors;
}

export type LimitField = "rpm" | "tpm" | "budget_usd" | "budget_period";
export type TeamField = "name" | LimitField;

export interface LimitsDraft {
  rpm: string;
  tpm: string;
  budget_usd: string;
  budget_period: string;
}

export interface Limits {
  rpm: number | null;
  tpm: number | null;
  budget_usd: number | null;
  budget_period: "day" | "month" | "total" | null;
}

/** Requests/tokens per minute and a budget, as typed: their errors, or the values. */
export function checkLimits(draft: LimitsDraft): { errors: FieldErrors<LimitField>; limits: Limits } {
  const errors: FieldErrors<LimitField> = {};
  const rpm = optionalInt(draft.rpm);
  const tpm = optionalInt(draft.tpm);
  const budget = optionalNumber(draft.budget_usd);
  if (Number.isNaN(rpm) || rpm === 0) errors.rpm = "A whole number of requests a minute, 1 or more.";
  if (Number.isNaN(tpm) || tpm === 0) errors.tpm = "A whole number of tokens a minute, 1 or more.";
  if (Number.isNaN(budget) || budget === 0) errors.budget_usd = "An amount in USD above 0, like 25 or 12.50.";
  const period = draft.budget_period === "" ? null : draft.budget_period;
  if (period !== null && !["day", "month", "total"].includes(period)) errors.budget_period = "Choose a period.";
  if (budget !== null && !Number.isNaN(budget) && period === null) errors.budget_period = "Choose the budget's period.";
  return {
    errors,
    limits: { rpm, tpm, budget_usd: budget, budget_period: period as Limits["budget_period"] },
  };
}

export interface TeamDraft extends LimitsDraft {
  name: string;
}

export function checkTeam(draft: TeamDraft): { errors: FieldErrors<TeamField>; body: Limits & { name: string } } {
  const { errors, limits } = checkLimits(draft);
  const all: FieldErrors<TeamField> = { ...errors };
  const name = draft.name.trim();
  if (!name) all.name = "Give the team a name.";
  else if (name.length > 200) all.name = "At most 200 characters.";
  return { errors: all, body: { name, ...limits } };
}

export type ExperimentField = "name" | "a" | "b" | "split" | "alpha";

export interface ExperimentDraft {
  name: string;
  a: string;
  b: string;
  split: string;
  alpha: string;
}

// The public name of an experiment (atrium/releases/experiments.py).
const EXPERIMENT_NAME = /^[a-z0-9][a-z0-9._-]{0,50}$/;

export function checkExperiment(draft: ExperimentDraft): {
  errors: FieldErrors<ExperimentField>;
  body: { name: string; a: string; b: string; split: number; alpha: number };
} {
  const errors: FieldErrors<ExperimentField> = {};
  const name = draft.name.trim();
  const a = draft.a.trim();
  const b = draft.b.trim();
  if (!EXPERIMENT_NAME.test(name)) {
    errors.name = "The public model name callers will use: lower-case letters, digits and . _ - (up to 51).";
  }
  if (!a) errors.a = "Choose the model for arm A.";
  if (!b) errors.b = "Choose the model for arm B.";
  else if (a === b) errors.b = "Arm B must be a different model from arm A.";
  const split = optionalNumber(draft.split);
  if (split === null || Number.isNaN(split) || split <= 0 || split >= 100) {
    errors.split = "A percentage above 0 and below 100.";
  }
  const alpha = optionalNumber(draft.alpha.startsWith(".") ? `0${draft.alpha}` : draft.alpha);
  if (alpha === null || Number.isNaN(alpha) || alpha <= 0 || alpha >= 0.5) {
    errors.alpha = "A significance level above 0 and below 0.5, like 0.05.";
  }
  return { errors, body: { name, a, b, split: split ?? 0, alpha: alpha ?? 0 } };
}

/** Whether a set of field errors is empty. */
export function isValid(errors: Record<string, string | undefined>): boolean {
  return Object.values(errors).every((e) => !e);
}
