import { NavLink, Outlet } from "react-router-dom";
import { useMe } from "../api/queries";
import { EmptyState } from "../pages/EmptyState";

const SECTIONS = [
  ["releases", "Releases"],
  ["deployments", "Deployments"],
  ["models", "Models"],
  ["experiments", "Experiments"],
  ["users", "Users"],
  ["teams", "Teams"],
  ["keys", "API keys"],
  ["usage", "Usage"],
  ["knowledge", "Knowledge bases"],
  ["runs", "Workflow runs"],
  ["audit", "Audit log"],
  ["health", "System health"],
] as const;

/** The admin console's frame: its sub-navigation, for admins only. */
export function AdminLayout() {
  const me = useMe();
  if (me.data?.role !== "admin") {
    return (
      <EmptyState title="Admins only">
        <p>
          The admin console is for administrators. Your account's role is{" "}
          <strong>{me.data?.role ?? "unknown"}</strong>; ask an administrator if you need access.
        </p>
      </EmptyState>
    );
  }
  return (
    <div className="admin">
      <nav className="admin-nav" aria-label="Admin">
        <h2 className="admin-title">Admin</h2>
        <ul>
          {SECTIONS.map(([path, label]) => (
            <li key={path}>
              <NavLink to={`/admin/${path}`}>{label}</NavLink>
            </li>
          ))}
        </ul>
      </nav>
      <section className="admin-main">
        <Outlet />
      </section>
    </div>
  );
}
