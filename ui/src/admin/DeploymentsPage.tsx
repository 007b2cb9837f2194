import { useState, type FormEvent } from "react";
import { describeError } from "../api/client";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useDeployments, useScale } from "./queries";
import type { Deployment } from "./types";

export function DeploymentsPage() {
  const deployments = useDeployments();
  return (
    <>
      <PageHeader title="Deployments" />
      <QueryView
        query={deployments}
        what="deployments"
        isEmpty={(data) => data.length === 0}
        empty={<p>No deployments. A release deploys its model; so does <code>atrium deployments create</code>.</p>}
      >
        {(data) => (
          <div className="cards">
            {data.map((deployment) => <DeploymentCard key={deployment.name} deployment={deployment} />)}
          </div>
        )}
      </QueryView>
    </>
  );
}

function DeploymentCard({ deployment }: { deployment: Deployment }) {
  const headingId = `deployment-${deployment.name}`;
  return (
    <article className="card" aria-labelledby={headingId} data-deployment={deployment.name}>
      <header className="card-head">
        <h3 id={headingId}>{deployment.name}</h3>
        <span className="muted">
          {deployment.model} v{deployment.version} · {deployment.runtime}
        </span>
      </header>
      <p data-testid="ready-count">
        <strong>{deployment.ready}</strong> of {deployment.desired} replicas ready
        <span className="muted"> (min {deployment.bounds.min}, max {deployment.bounds.max})</span>
      </p>
      {deployment.replicas.length === 0 ? (
        <p className="muted">No replicas running.</p>
      ) : (
        <table className="data-table compact" aria-label={`Replicas of ${deployment.name}`}>
          <thead>
            <tr>
              <th scope="col">#</th><th scope="col">State</th><th scope="col" className="num">In flight</th>
              <th scope="col" className="num">Restarts</th><th scope="col">Address</th>
            </tr>
          </thead>
          <tbody>
            {deployment.replicas.map((replica) => (
              <tr key={replica.index}>
                <td>{replica.index}</td>
                <td><StatusBadge status={replica.state} /></td>
                <td className="num">{replica.in_flight}</td>
                <td className="num">
                  {replica.restarts}
                  {replica.last_exit_code !== null && <span className="muted"> (exit {replica.last_exit_code})</span>}
                </td>
                <td><code>{replica.base_url ?? "—"}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <ScaleForm deployment={deployment} />
    </article>
  );
}

function ScaleForm({ deployment }: { deployment: Deployment }) {
  const scale = useScale(deployment.name);
  const [value, setValue] = useState(String(deployment.desired));
  const [local, setLocal] = useState<string | null>(null);
  const inputId = `scale-${deployment.name}`;
  const errorId = `${inputId}-error`;

  function submit(event: FormEvent) {
    event.preventDefault();
    const replicas = Number(value);
    // Only what is not a number at all is stopped here; the server judges the bounds.
    if (value.trim() === "" || !Number.isInteger(replicas)) {
      setLocal("Enter a whole number of replicas.");
      return;
    }
    setLocal(null);
    scale.mutate(replicas);
  }
  const serverError = scale.isError ? describeError(scale.error) : null;
  const error = local ?? serverError;
  return (
    <form className="inline-form" onSubmit={submit} noValidate>
      <label htmlFor={inputId}>Replicas</label>
      <input
        id={inputId}
        type="number"
        inputMode="numeric"
        value={value}
        onChange={(event) => setValue(event.target.value)}
        aria-invalid={error ? true : undefined}
        aria-describedby={error ? errorId : undefined}
        className="narrow"
      />
      <button type="submit" disabled={scale.isPending}>{scale.isPending ? "Scaling…" : "Scale"}</button>
      {error && (
        <span id={errorId} className="error" role="alert">
          {error}
        </span>
      )}
      {scale.isSuccess && !error && <span role="status" className="muted">Scaling to {scale.variables}.</span>}
    </form>
  );
}
