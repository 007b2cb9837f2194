import { useQueryClient } from "@tanstack/react-query";
import { useEffect } from "react";
import { Navigate, Route, Routes, useLocation, useNavigate } from "react-router-dom";
import { onSessionExpired } from "./api/client";
import { RequireUser } from "./auth/RequireUser";
import { LoginPage } from "./auth/LoginPage";
import { Shell } from "./layout/Shell";
import { AdminPage } from "./pages/AdminPage";
import { ChatPage } from "./pages/ChatPage";
import { NotFoundPage } from "./pages/NotFoundPage";
import { WorkflowsPage } from "./pages/WorkflowsPage";

/** Sends the user to sign in when any request finds the session gone, and back after. */
function SessionWatcher() {
  const navigate = useNavigate();
  const location = useLocation();
  const queryClient = useQueryClient();
  useEffect(
    () =>
      onSessionExpired(() => {
        // Only a session that existed can have ended; a first visit just signs in.
        if (location.pathname === "/login" || !queryClient.getQueryData(["me"])) return;
        queryClient.removeQueries({ queryKey: ["me"] });
        const next = location.pathname + location.search;
        navigate(`/login?next=${encodeURIComponent(next)}&expired=1`, { replace: true });
      }),
    [location, navigate, queryClient],
  );
  return null;
}

export function App() {
  return (
    <>
      <SessionWatcher />
      <Routes>
        <Route path="/login" element={<LoginPage />} />
        <Route
          element={
            <RequireUser>
              <Shell />
            </RequireUser>
          }
        >
          <Route index element={<Navigate to="/chat" replace />} />
          <Route path="/chat" element={<ChatPage />} />
          <Route path="/chat/:conversationId" element={<ChatPage />} />
          <Route path="/workflows" element={<WorkflowsPage />} />
          <Route path="/admin/*" element={<AdminPage />} />
          <Route path="*" element={<NotFoundPage />} />
        </Route>
      </Routes>
    </>
  );
}
