import { useState, type FormEvent } from "react";
import { checkTeam, isValid, placeError, type FieldErrors, type TeamField } from "./forms";
import { formatWhen } from "./format";
import { Field, PageHeader, QueryView, invalidProps } from "./parts";
import { useCreateTeam, useTeams } from "./queries";
import type { Team } from "./types";

const TEAM_FIELDS: TeamField[] = ["name", "rpm", "tpm", "budget_usd", "budget_period"];
const BLANK = { name: "", rpm: "", tpm: "", budget_usd: "", budget_period: "" };

export function TeamsPage() {
  const teams = useTeams();
  return (
    <>
      <PageHeader title="Teams" />
      <p className="muted">A team's limits and budget apply to all its API keys together; give a key its team when you create it.</p>
      <CreateTeamForm />
      <QueryView query={teams} what="teams" isEmpty={(d) => d.length === 0} empty={<p>No teams yet. Create one above.</p>}>
        {(data) => <TeamTable teams={data} />}
      </QueryView>
    </>
  );
}

function CreateTeamForm() {
  const create = useCreateTeam();
  const [draft, setDraft] = useState(BLANK);
  const [errors, setErrors] = useState<FieldErrors<TeamField>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const set = (field: TeamField, value: string) => setDraft((d) => ({ ...d, [field]: value }));

  function submit(event: FormEvent) {
    event.preventDefault();
    const { errors: found, body } = checkTeam(draft);
    setErrors(found);
    setFormError(null);
    setDone(null);
    if (!isValid(found)) return;
    create.mutate(body, {
      onSuccess: (team) => { setDraft(BLANK); setDone(`Team “${team.name}” created.`); },
      onError: (error) => {
        const placed = placeError(error, TEAM_FIELDS);
        if (placed.field) setErrors({ [placed.field]: placed.message });
        else setFormError(placed.message);
      },
    });
  }
  const input = (field: Exclude<TeamField, "budget_period">, id: string, props: Record<string, unknown> = {}) => (
    <input id={id} value={draft[field]} onChange={(e) => set(field, e.target.value)} {...props}
      {...invalidProps(id, errors[field])} />
  );
  return (
    <form className="card admin-form" onSubmit={submit} noValidate aria-labelledby="create-team-title">
      <h3 id="create-team-title">Create a team</h3>
      <div className="form-grid">
        <Field id="team-name" label="Name" error={errors.name}>{input("name", "team-name", { maxLength: 200 })}</Field>
        <Field id="team-rpm" label="Requests a minute" error={errors.rpm} hint="blank: no limit">
          {input("rpm", "team-rpm", { inputMode: "numeric" })}
        </Field>
        <Field id="team-tpm" label="Tokens a minute" error={errors.tpm} hint="blank: no limit">
          {input("tpm", "team-tpm", { inputMode: "numeric" })}
        </Field>
        <Field id="team-budget" label="Budget (USD)" error={errors.budget_usd} hint="blank: no budget">
          {input("budget_usd", "team-budget", { inputMode: "decimal" })}
        </Field>
        <Field id="team-period" label="Budget period" error={errors.budget_period}>
          <select id="team-period" value={draft.budget_period} onChange={(e) => set("budget_period", e.target.value)}
            {...invalidProps("team-period", errors.budget_period)}>
            <option value="">—</option>
            <option value="day">Per day</option>
            <option value="month">Per month</option>
            <option value="total">In total</option>
          </select>
        </Field>
      </div>
      <button type="submit" className="primary" disabled={create.isPending}>
        {create.isPending ? "Creating…" : "Create team"}
      </button>
      {formError && <p className="error" role="alert">{formError}</p>}
      <p className="muted" role="status" aria-live="polite">{done}</p>
    </form>
  );
}

function TeamTable({ teams }: { teams: Team[] }) {
  return (
    <div className="table-scroll">
      <table className="data-table" aria-label="Teams">
        <thead>
          <tr>
            <th scope="col">Name</th><th scope="col" className="num">Requests/min</th>
            <th scope="col" className="num">Tokens/min</th><th scope="col">Budget</th><th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {teams.map((team) => (
            <tr key={team.id} data-team={team.name}>
              <td>{team.name}</td>
              <td className="num">{team.rpm ?? "—"}</td>
              <td className="num">{team.tpm ?? "—"}</td>
              <td>{team.budget_usd ? `$${team.budget_usd} / ${team.budget_period ?? "total"}` : "—"}</td>
              <td>{formatWhen(team.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
