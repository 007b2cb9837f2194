export type Role = "admin" | "builder" | "user";

export interface User {
  id: string;
  username: string;
  display_name: string;
  role: Role;
  scopes: string[];
  disabled: boolean;
  session_expires_at?: string | null;
}

/** A message's metadata: flat values, and lists of records (a knowledge-base answer's citations). */
export type MetaValue = string | number | boolean | null | Record<string, unknown>[];

export interface ChatMessage {
  role: "system" | "user" | "assistant";
  content: string;
  meta?: Record<string, MetaValue> | null;
}

export interface ConversationSummary {
  id: string;
  title: string;
  model: string;
  created_at: string;
  updated_at: string;
}

export interface Conversation extends ConversationSummary {
  messages: ChatMessage[];
}

export interface ModelInfo {
  id: string;
  owned_by: string;
}

export interface ListOf<T> {
  object: "list";
  data: T[];
}
