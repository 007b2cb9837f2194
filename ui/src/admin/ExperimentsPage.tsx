import { useState, type FormEvent } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { describeError } from "../api/client";
import { checkExperiment, isValid, placeError, type ExperimentField, type FieldErrors } from "./forms";
import { formatMetric, formatWhen, humanize } from "./format";
import { Field, PageHeader, QueryView, StatusBadge, invalidProps } from "./parts";
import { useCreateExperiment, useDeployments, useExperiment, useExperiments, useStopExperiment } from "./queries";
import type { ArmNumbers, Experiment } from "./types";

export function ExperimentsPage() {
  const experiments = useExperiments();
  return (
    <>
      <PageHeader title="Experiments" />
      <CreateExperimentForm />
      <QueryView
        query={experiments}
        what="experiments"
        isEmpty={(data) => data.length === 0}
        empty={<p>No A/B experiments. Start one above.</p>}
      >
        {(data) => (
          <table className="data-table" aria-label="Experiments">
            <thead>
              <tr>
                <th scope="col">Name</th><th scope="col">Arms (A / B)</th><th scope="col" className="num">Split to B</th>
                <th scope="col">Status</th><th scope="col">Verdict</th><th scope="col">Started</th>
              </tr>
            </thead>
            <tbody>
              {data.map((e) => (
                <tr key={e.id}>
                  <td><Link to={`/admin/experiments/${encodeURIComponent(e.name)}`}>{e.name}</Link></td>
                  <td>{e.spec.a} / {e.spec.b}</td>
                  <td className="num">{e.spec.split}%</td>
                  <td><StatusBadge status={e.status} /></td>
                  <td>{e.verdict ? humanize(e.verdict.outcome) : "—"}</td>
                  <td>{formatWhen(e.started_at)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </QueryView>
    </>
  );
}

export function ExperimentPage() {
  const { name = "" } = useParams();
  const experiment = useExperiment(name);
  return (
    <>
      <p><Link to="/admin/experiments">← All experiments</Link></p>
      <QueryView query={experiment} what="the experiment">
        {(data) => <ExperimentDetail experiment={data} />}
      </QueryView>
    </>
  );
}

const ARM_COLUMNS: [keyof ArmNumbers, string][] = [
  ["requests", "Requests"], ["errors", "Errors"], ["error_rate", "Error rate"],
  ["p95_latency_ms", "p95 latency"], ["p95_ttft_ms", "p95 first token"], ["tokens", "Tokens"],
  ["feedback_up", "👍"], ["feedback_down", "👎"],
];

function ExperimentDetail({ experiment }: { experiment: Experiment }) {
  const { spec, verdict } = experiment;
  return (
    <>
      <PageHeader title={experiment.name}><StatusBadge status={experiment.status} /></PageHeader>
      <dl className="facts">
        <dt>Arm A</dt><dd>{spec.a}</dd>
        <dt>Arm B</dt><dd>{spec.b} ({spec.split}% of users)</dd>
        <dt>Significance level</dt><dd>{spec.alpha}</dd>
        <dt>Started</dt><dd>{formatWhen(experiment.started_at)}</dd>
        {experiment.ended_at && <><dt>Ended</dt><dd>{formatWhen(experiment.ended_at)}</dd></>}
      </dl>
      <h3>Arms</h3>
      {experiment.arms?.length ? (
        <div className="table-scroll">
          <table className="data-table" aria-label="Numbers per arm">
            <thead>
              <tr><th scope="col">Arm</th>{ARM_COLUMNS.map(([key, label]) => (
                <th key={key} scope="col" className="num">{label}</th>
              ))}</tr>
            </thead>
            <tbody>
              {experiment.arms.map((arm) => (
                <tr key={arm.arm}>
                  <th scope="row">{arm.arm}</th>
                  {ARM_COLUMNS.map(([key]) => <td key={key} className="num">{formatMetric(key, arm[key])}</td>)}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p className="notice empty">
          {experiment.status === "running" ? "No traffic measured yet." : "Per-arm numbers are shown while it runs."}
        </p>
      )}
      <h3>Verdict</h3>
      {verdict ? (
        <div className="verdict">
          <p><strong>{humanize(verdict.outcome)}</strong>{verdict.winner && <> — winner: {verdict.winner}</>}</p>
          <p>{verdict.text}</p>
          {verdict.findings.length > 0 && <ul>{verdict.findings.map((f) => <li key={f}>{f}</li>)}</ul>}
        </div>
      ) : (
        <p className="notice empty">No verdict yet.</p>
      )}
      {experiment.status === "running" && <StopExperiment name={experiment.name} />}
    </>
  );
}

function StopExperiment({ name }: { name: string }) {
  const stop = useStopExperiment(name);
  return (
    <form
      className="inline-form"
      onSubmit={(event) => {
        event.preventDefault();
        const keep = new FormData(event.currentTarget).get("keep") as "a" | "b" | "winner";
        if (window.confirm(`Stop experiment ${name}?`)) stop.mutate(keep);
      }}
    >
      <label htmlFor="keep-arm">Keep traffic on</label>
      <select id="keep-arm" name="keep" defaultValue="winner">
        <option value="winner">the winner (B only if it won)</option>
        <option value="a">arm A</option>
        <option value="b">arm B</option>
      </select>
      <button type="submit" className="danger" disabled={stop.isPending}>Stop experiment</button>
      {stop.isError && <span className="error" role="alert">{describeError(stop.error)}</span>}
    </form>
  );
}

const EXPERIMENT_FIELDS: ExperimentField[] = ["name", "a", "b", "split", "alpha"];
const BLANK = { name: "", a: "", b: "", split: "50", alpha: "0.05" };

/** Starts an A/B split between two served models under a new public name. */
function CreateExperimentForm() {
  const create = useCreateExperiment();
  const deployments = useDeployments();
  const navigate = useNavigate();
  const [draft, setDraft] = useState(BLANK);
  const [errors, setErrors] = useState<FieldErrors<ExperimentField>>({});
  const [formError, setFormError] = useState<string | null>(null);
  const set = (field: ExperimentField, value: string) => setDraft((d) => ({ ...d, [field]: value }));
  const served = (deployments.data ?? []).map((d) => d.name);

  function submit(event: FormEvent) {
    event.preventDefault();
    const { errors: found, body } = checkExperiment(draft);
    setErrors(found);
    setFormError(null);
    if (!isValid(found)) return;
    create.mutate(body, {
      onSuccess: (experiment) => navigate(`/admin/experiments/${encodeURIComponent(experiment.name)}`),
      onError: (error) => {
        const placed = placeError(error, EXPERIMENT_FIELDS);
        if (placed.field) setErrors({ [placed.field]: placed.message });
        else setFormError(placed.message);
      },
    });
  }
  const arm = (field: "a" | "b", label: string) => (
    <Field id={`experiment-${field}`} label={label} error={errors[field]}>
      <input id={`experiment-${field}`} list="served-models" value={draft[field]}
        onChange={(e) => set(field, e.target.value)} {...invalidProps(`experiment-${field}`, errors[field])} />
    </Field>
  );
  return (
    <form className="card admin-form" onSubmit={submit} noValidate aria-labelledby="create-experiment-title">
      <h3 id="create-experiment-title">Start an experiment</h3>
      <datalist id="served-models">{served.map((name) => <option key={name} value={name} />)}</datalist>
      <div className="form-grid">
        <Field id="experiment-name" label="Public name" error={errors.name} hint="the model name callers use">
          <input id="experiment-name" value={draft.name} onChange={(e) => set("name", e.target.value)}
            {...invalidProps("experiment-name", errors.name)} />
        </Field>
        {arm("a", "Arm A (model)")}
        {arm("b", "Arm B (model)")}
        <Field id="experiment-split" label="Users on B (%)" error={errors.split}>
          <input id="experiment-split" inputMode="decimal" value={draft.split} onChange={(e) => set("split", e.target.value)}
            {...invalidProps("experiment-split", errors.split)} />
        </Field>
        <Field id="experiment-alpha" label="Significance level" error={errors.alpha}>
          <input id="experiment-alpha" inputMode="decimal" value={draft.alpha} onChange={(e) => set("alpha", e.target.value)}
            {...invalidProps("experiment-alpha", errors.alpha)} />
        </Field>
      </div>
      <button type="submit" className="primary" disabled={create.isPending}>
        {create.isPending ? "Starting…" : "Start experiment"}
      </button>
      {formError && <p className="error" role="alert">{formError}</p>}
    </form>
  );
}
