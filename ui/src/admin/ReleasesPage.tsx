import { Link } from "react-router-dom";
import { formatWhen, humanize } from "./format";
import { PageHeader, QueryView, StatusBadge } from "./parts";
import { useReleases } from "./queries";

export function ReleasesPage() {
  const releases = useReleases();
  return (
    <>
      <PageHeader title="Releases" />
      <QueryView
        query={releases}
        what="releases"
        isEmpty={(data) => data.length === 0}
        empty={
          <p>
            No releases yet. A watcher starts one when it detects a new model; you can also start
            one with <code>atrium releases create MODEL FILE</code>.
          </p>
        }
      >
        {(data) => (
          <div className="table-scroll">
            <table className="data-table" aria-label="Releases">
              <thead>
                <tr>
                  <th scope="col">Release</th>
                  <th scope="col">Model</th>
                  <th scope="col">Version</th>
                  <th scope="col">Status</th>
                  <th scope="col">Stage</th>
                  <th scope="col" className="num">Weight</th>
                  <th scope="col">Started</th>
                </tr>
              </thead>
              <tbody>
                {data.map((release) => (
                  <tr key={release.id}>
                    <td>
                      <Link to={`/admin/releases/${encodeURIComponent(release.id)}`}>{release.id}</Link>
                    </td>
                    <td>{release.model}</td>
                    <td>{release.version ?? "—"}</td>
                    <td><StatusBadge status={release.status} /></td>
                    <td data-testid="release-stage">{humanize(release.stage)}</td>
                    <td className="num">{release.weight}%</td>
                    <td>{formatWhen(release.created_at)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </QueryView>
    </>
  );
}
