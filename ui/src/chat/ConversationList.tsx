import { useMutation, useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useEffect, useState } from "react";
import { NavLink, useNavigate } from "react-router-dom";
import { apiJson, describeError } from "../api/client";
import { useConversations } from "../api/queries";
import type { ConversationSummary } from "../api/types";

function useDebounced(value: string, ms: number): string {
  const [debounced, setDebounced] = useState(value);
  useEffect(() => {
    const timer = setTimeout(() => setDebounced(value), ms);
    return () => clearTimeout(timer);
  }, [value, ms]);
  return debounced;
}

export function ConversationList({ activeId }: { activeId?: string }) {
  const [search, setSearch] = useState("");
  const query = useDebounced(search.trim(), 250);
  const conversations = useConversations(query);
  return (
    <aside className="sidebar" aria-label="Conversations">
      <NavLink to="/chat" end className="button primary new-chat">
        + New chat
      </NavLink>
      <label htmlFor="conversation-search" className="visually-hidden">
        Search conversations
      </label>
      <input
        id="conversation-search"
        type="search"
        placeholder="Search conversations"
        value={search}
        onChange={(e) => setSearch(e.target.value)}
      />
      {conversations.isPending && (
        <p className="muted" role="status">
          Loading conversations…
        </p>
      )}
      {conversations.error && (
        <div role="alert" className="error">
          <p>Could not load conversations: {describeError(conversations.error)}</p>
          <button type="button" onClick={() => conversations.refetch()}>
            Try again
          </button>
        </div>
      )}
      {conversations.data?.length === 0 && (
        <p className="muted">{query ? "No conversation matches." : "No conversations yet."}</p>
      )}
      <ul className="conversation-list">
        {conversations.data?.map((c) => (
          <ConversationItem key={c.id} conversation={c} active={c.id === activeId} />
        ))}
      </ul>
    </aside>
  );
}

function ConversationItem({
  conversation,
  active,
}: {
  conversation: ConversationSummary;
  active: boolean;
}) {
  const queryClient = useQueryClient();
  const navigate = useNavigate();
  const [renaming, setRenaming] = useState(false);
  const [title, setTitle] = useState(conversation.title);
  const invalidate = () => queryClient.invalidateQueries({ queryKey: ["conversations"] });
  const rename = useMutation({
    mutationFn: (next: string) =>
      apiJson(`/v1/conversations/${conversation.id}`, {
        method: "PATCH",
        body: JSON.stringify({ title: next }),
      }),
    onSuccess: () => {
      setRenaming(false);
      invalidate();
    },
  });
  const remove = useMutation({
    mutationFn: () => apiJson(`/v1/conversations/${conversation.id}`, { method: "DELETE" }),
    onSuccess: () => {
      invalidate();
      queryClient.removeQueries({ queryKey: ["conversation", conversation.id] });
      if (active) navigate("/chat", { replace: true });
    },
  });

  function submit(event: FormEvent) {
    event.preventDefault();
    if (title.trim()) rename.mutate(title.trim());
  }

  if (renaming) {
    return (
      <li>
        <form onSubmit={submit} className="rename-form">
          <label htmlFor={`rename-${conversation.id}`} className="visually-hidden">
            New title
          </label>
          <input
            id={`rename-${conversation.id}`}
            value={title}
            maxLength={200}
            autoFocus
            onChange={(e) => setTitle(e.target.value)}
            onKeyDown={(e) => e.key === "Escape" && setRenaming(false)}
          />
          <button type="submit" disabled={rename.isPending}>
            Save
          </button>
          {rename.error && <span className="error">{describeError(rename.error)}</span>}
        </form>
      </li>
    );
  }
  return (
    <li className={active ? "active" : undefined}>
      <NavLink to={`/chat/${conversation.id}`} title={conversation.title}>
        {conversation.title}
      </NavLink>
      <span className="item-actions">
        <button
          type="button"
          className="ghost small"
          aria-label={`Rename “${conversation.title}”`}
          onClick={() => setRenaming(true)}
        >
          ✎
        </button>
        <button
          type="button"
          className="ghost small"
          aria-label={`Delete “${conversation.title}”`}
          disabled={remove.isPending}
          onClick={() => window.confirm(`Delete “${conversation.title}”?`) && remove.mutate()}
        >
          ×
        </button>
      </span>
      {remove.error && <span className="error">{describeError(remove.error)}</span>}
    </li>
  );
}
