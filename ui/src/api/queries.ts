import { useQuery } from "@tanstack/react-query";
import { apiJson } from "./client";
import type { Conversation, ConversationSummary, ListOf, ModelInfo, User } from "./types";

export const keys = {
  me: ["me"] as const,
  models: ["models"] as const,
  conversations: (q: string) => ["conversations", q] as const,
  conversation: (id: string) => ["conversation", id] as const,
};

export function useMe() {
  return useQuery({
    queryKey: keys.me,
    queryFn: () => apiJson<User>("/v1/auth/me"),
    retry: false,
    staleTime: 60_000,
  });
}

export function useModels() {
  return useQuery({
    queryKey: keys.models,
    queryFn: async () => (await apiJson<ListOf<ModelInfo>>("/v1/models")).data,
    staleTime: 60_000,
  });
}

export function useConversations(q: string) {
  return useQuery({
    queryKey: keys.conversations(q),
    queryFn: async () => {
      const query = q ? `?q=${encodeURIComponent(q)}` : "";
      return (await apiJson<ListOf<ConversationSummary>>(`/v1/conversations${query}`)).data;
    },
  });
}

export function useConversation(id: string | undefined) {
  return useQuery({
    queryKey: keys.conversation(id ?? ""),
    queryFn: () => apiJson<Conversation>(`/v1/conversations/${encodeURIComponent(id ?? "")}`),
    enabled: Boolean(id),
  });
}
