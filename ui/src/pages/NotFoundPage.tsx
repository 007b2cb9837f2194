import { Link } from "react-router-dom";
import { EmptyState } from "./EmptyState";

export function NotFoundPage() {
  return (
    <EmptyState title="Nothing here">
      <p>This page does not exist.</p>
      <p>
        <Link to="/chat">Go to Chat</Link>
      </p>
    </EmptyState>
  );
}
