import { Navigate, Route, Routes } from "react-router-dom";
import { NotFoundPage } from "../pages/NotFoundPage";
import { AdminLayout } from "./AdminLayout";
import { DeploymentsPage } from "./DeploymentsPage";
import { AuditPage } from "./AuditPage";
import { ExperimentPage, ExperimentsPage } from "./ExperimentsPage";
import { HealthPage } from "./HealthPage";
import { KeysPage } from "./KeysPage";
import { KnowledgeBasePage, KnowledgeBasesPage } from "./KnowledgePage";
import { ModelsPage } from "./ModelsPage";
import { ReleasePage } from "./ReleasePage";
import { ReleasesPage } from "./ReleasesPage";
import { TeamsPage } from "./TeamsPage";
import { UsagePage } from "./UsagePage";
import { UsersPage } from "./UsersPage";
import { WorkflowRunPage, WorkflowRunsPage } from "./WorkflowRunsPage";

/** Everything under /admin (loaded on demand: the chart library stays out of Chat's bundle). */
export default function AdminRoutes() {
  return (
    <Routes>
      <Route element={<AdminLayout />}>
        <Route index element={<Navigate to="releases" replace />} />
        <Route path="releases" element={<ReleasesPage />} />
        <Route path="releases/:releaseId" element={<ReleasePage />} />
        <Route path="deployments" element={<DeploymentsPage />} />
        <Route path="models" element={<ModelsPage />} />
        <Route path="experiments" element={<ExperimentsPage />} />
        <Route path="experiments/:name" element={<ExperimentPage />} />
        <Route path="keys" element={<KeysPage />} />
        <Route path="usage" element={<UsagePage />} />
        <Route path="users" element={<UsersPage />} />
        <Route path="teams" element={<TeamsPage />} />
        <Route path="knowledge" element={<KnowledgeBasesPage />} />
        <Route path="knowledge/:name" element={<KnowledgeBasePage />} />
        <Route path="runs" element={<WorkflowRunsPage />} />
        <Route path="runs/:runId" element={<WorkflowRunPage />} />
        <Route path="audit" element={<AuditPage />} />
        <Route path="health" element={<HealthPage />} />
        <Route path="*" element={<NotFoundPage />} />
      </Route>
    </Routes>
  );
}
