import { useState } from "react";
import { formatBytes, formatWhen } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useRegistryModel, useRegistryModels } from "./queries";
import type { RegistryModelView } from "./types";

export function ModelsPage() {
  const models = useRegistryModels();
  const [open, setOpen] = useState<string | null>(null);
  return (
    <>
      <PageHeader title="Models" />
      <QueryView
        query={models}
        what="the model registry"
        isEmpty={(data) => data.length === 0}
        empty={<p>The registry is empty. A release registers its model's versions.</p>}
      >
        {(data) => (
          <ul className="model-list">
            {data.map((model) => (
              <li key={model.id}>
                <button
                  type="button"
                  className="disclosure"
                  aria-expanded={open === model.name}
                  onClick={() => setOpen(open === model.name ? null : model.name)}
                >
                  <span aria-hidden="true">{open === model.name ? "▾" : "▸"}</span> <strong>{model.name}</strong>
                  {model.description && <span className="muted"> — {model.description}</span>}
                </button>
                {open === model.name && <ModelDetail name={model.name} />}
              </li>
            ))}
          </ul>
        )}
      </QueryView>
    </>
  );
}

function ModelDetail({ name }: { name: string }) {
  const model = useRegistryModel(name);
  return (
    <div className="model-detail">
      <QueryView query={model} what={`${name}'s versions`}>
        {(data) => <Versions model={data} />}
      </QueryView>
    </div>
  );
}

function Versions({ model }: { model: RegistryModelView }) {
  const aliasesOf = (version: number) =>
    Object.entries(model.aliases).filter(([, v]) => v === version).map(([alias]) => alias);
  if (model.versions.length === 0) return <p className="muted">No versions registered.</p>;
  return (
    <table className="data-table" aria-label={`Versions of ${model.name}`}>
      <thead>
        <tr>
          <th scope="col">Version</th><th scope="col">Aliases</th><th scope="col">Status</th>
          <th scope="col">Format</th><th scope="col" className="num">Size</th><th scope="col">Tags</th>
          <th scope="col">Registered</th>
        </tr>
      </thead>
      <tbody>
        {[...model.versions].reverse().map((version) => (
          <tr key={version.id}>
            <td>{version.version}</td>
            <td>
              {aliasesOf(version.version).map((alias) => <span key={alias} className="badge info">{alias}</span>)}
            </td>
            <td><StatusBadge status={version.status} /></td>
            <td>{version.format}</td>
            <td className="num">{formatBytes(version.size_bytes)}</td>
            <td>{version.tags.join(", ") || "—"}</td>
            <td>{formatWhen(version.created_at)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
