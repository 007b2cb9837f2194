import { useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useRef, useState } from "react";
import { Link, useNavigate, useParams } from "react-router-dom";
import { ApiError, SessionExpiredError, apiJson, describeError } from "../api/client";
import { keys, useConversation, useModels } from "../api/queries";
import type { ChatMessage, Conversation, MetaValue } from "../api/types";
import { attachmentMessage, attachmentProblem, fetchLimits, uploadAttachment } from "../chat/attachments";
import "../chat/chat.css";
import { CitationDrawer } from "../chat/Citations";
import { Composer } from "../chat/Composer";
import { ConversationList } from "../chat/ConversationList";
import { loadDraft, saveDraft } from "../chat/drafts";
import { type Citation, kbOf, ragModel } from "../chat/knowledge";
import { KnowledgeBasePicker } from "../chat/KnowledgeBasePicker";
import { MessageList } from "../chat/MessageList";
import { streamChat } from "../chat/stream";

function titleFrom(text: string): string {
  const line = text.trim().split("\n")[0];
  return line.length > 60 ? `${line.slice(0, 57)}…` : line || "New conversation";
}

export function ChatPage() {
  const { conversationId } = useParams();
  const draftKey = conversationId ?? "new";
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const models = useModels();
  const limits = useQuery({ queryKey: ["attachment-limits"], queryFn: fetchLimits, staleTime: Infinity });
  const conversation = useConversation(conversationId);
  const [messages, setMessages] = useState<ChatMessage[]>([]);
  const [model, setModel] = useState("");
  const [draft, setDraftState] = useState(() => loadDraft(draftKey));
  const [streaming, setStreaming] = useState<string | null>(null);
  const [streamingCitations, setStreamingCitations] = useState<Citation[]>([]);
  const [openCitation, setOpenCitation] = useState<Citation | null>(null);
  const [attaching, setAttaching] = useState(false);
  const closeCitation = useCallback(() => setOpenCitation(null), []);
  const kb = kbOf(model);
  // The plain model to return to when the knowledge base is unset.
  const plainModel = useRef("");
  if (model && !kb) plainModel.current = model;
  const [error, setError] = useState<string | null>(null);
  const abort = useRef<AbortController | null>(null);
  const busy = streaming !== null;

  // Another conversation (or a new one): its own draft, messages and model.
  useEffect(() => {
    setDraftState(loadDraft(draftKey));
    setError(null);
    setOpenCitation(null);
    if (!conversationId && !abort.current) setMessages([]);
  }, [draftKey, conversationId]);

  useEffect(() => {
    if (conversation.data && !abort.current) {
      setMessages(conversation.data.messages);
      setModel(conversation.data.model);
    }
  }, [conversation.data]);

  // The first model until the user or the conversation picks one. An updater, not this
  // render's `model`: the conversation's model may be set in the same commit (both queries
  // answered together), and a stale "" here would overwrite it with the default.
  useEffect(() => {
    const first = models.data?.[0]?.id;
    if (first) setModel((current) => current || first);
  }, [models.data]);

  const setDraft = (text: string) => {
    setDraftState(text);
    saveDraft(draftKey, text);
  };

  async function save(id: string, final: ChatMessage[]) {
    try {
      const saved = await apiJson<Conversation>(`/v1/conversations/${id}/messages`, {
        method: "PUT",
        body: JSON.stringify({ messages: final }),
      });
      queryClient.setQueryData(keys.conversation(id), saved);
      await queryClient.invalidateQueries({ queryKey: ["conversations"] });
    } catch (caught) {
      setError(`The conversation could not be saved: ${describeError(caught)}`);
    }
  }

  async function answer(id: string, history: ChatMessage[]) {
    const controller = new AbortController();
    abort.current = controller;
    setError(null);
    setStreaming("");
    setStreamingCitations([]);
    let text = "";
    const meta: Record<string, MetaValue> = { model, asked: model };
    const keep = (citations: Citation[]) => {
      if (citations.length) meta.citations = citations as unknown as Record<string, unknown>[];
      setStreamingCitations(citations);
    };
    try {
      const result = await streamChat(
        model,
        history,
        controller.signal,
        (partial) => {
          text = partial;
          setStreaming(partial);
        },
        keep,
      );
      text = result.content;
      if (result.model) meta.model = result.model;
      if (result.routedTo) meta.routed_to = result.routedTo;
      if (result.queryId) meta.query_id = result.queryId;
    } catch (caught) {
      if (caught instanceof SessionExpiredError) {
        // Back to sign-in: the question returns to the draft, nothing is lost.
        saveDraft(draftKey, history[history.length - 1]?.content ?? "");
        return;
      }
      if (controller.signal.aborted) meta.stopped = true;
      else meta.error = describeError(caught);
    } finally {
      abort.current = null;
      setStreaming(null);
      setStreamingCitations([]);
    }
    const final = text || meta.error ? [...history, { role: "assistant" as const, content: text, meta }] : history;
    setMessages(final);
    await save(id, final);
  }

  /** The conversation's id, creating it (with `history`) when this is a new chat; null
   * when it could not be created (the error is shown). */
  async function ensureConversation(title: string, history: ChatMessage[]): Promise<string | null> {
    if (conversationId) return conversationId;
    try {
      const created = await apiJson<Conversation>("/v1/conversations", {
        method: "POST",
        body: JSON.stringify({ title: titleFrom(title), model, messages: history }),
      });
      queryClient.setQueryData(keys.conversation(created.id), created);
      await queryClient.invalidateQueries({ queryKey: ["conversations"] });
      saveDraft(created.id, draft);
      navigate(`/chat/${created.id}`, { replace: true });
      return created.id;
    } catch (caught) {
      if (!(caught instanceof SessionExpiredError)) setError(describeError(caught));
      return null;
    }
  }

  async function send() {
    const text = draft.trim();
    if (!text || !model || busy) return;
    const history: ChatMessage[] = [...messages, { role: "user", content: text }];
    setMessages(history);
    setDraft("");
    const isNew = !conversationId;
    const id = await ensureConversation(text, history);
    if (!id) {
      setMessages(messages);
      setDraft(text);
      return;
    }
    if (isNew) saveDraft(id, "");
    await answer(id, history);
  }

  /** "Analyze this": the document is read by the server and kept as a message, so the
   * next questions are asked with its text. */
  async function attach(file: File) {
    if (busy || attaching) return;
    setError(null);
    const known = limits.data;
    const problem = known ? attachmentProblem(file, known) : null;
    if (problem) {
      setError(problem);
      return;
    }
    setAttaching(true);
    try {
      const history = [...messages, attachmentMessage(await uploadAttachment(file))];
      setMessages(history);
      const id = await ensureConversation(`Document: ${file.name}`, history);
      if (id && conversationId) await save(id, history);
      else if (!id) setMessages(messages);
    } catch (caught) {
      if (!(caught instanceof SessionExpiredError)) {
        setError(`${file.name} could not be attached: ${describeError(caught)}`);
      }
    } finally {
      setAttaching(false);
    }
  }

  function keepRating(index: number, message: ChatMessage) {
    const next = messages.map((m, i) => (i === index ? message : m));
    setMessages(next);
    if (conversationId) void save(conversationId, next);
  }

  function chooseKnowledgeBase(name: string) {
    const plain = models.data?.[0]?.id ?? "";
    void changeModel(name ? ragModel(name) : plainModel.current || plain);
  }

  function regenerate() {
    if (!conversationId || busy) return;
    const last = messages[messages.length - 1];
    const history = last?.role === "assistant" ? messages.slice(0, -1) : messages;
    setMessages(history);
    void answer(conversationId, history);
  }

  async function changeModel(next: string) {
    setModel(next);
    if (!conversationId) return;
    try {
      await apiJson(`/v1/conversations/${conversationId}`, {
        method: "PATCH",
        body: JSON.stringify({ model: next }),
      });
    } catch (caught) {
      setError(describeError(caught));
    }
  }

  const notFound = conversation.error instanceof ApiError && conversation.error.status === 404;

  return (
    <div className="chat">
      <ConversationList activeId={conversationId} />
      <section className="chat-main" aria-label="Chat">
        <div className="chat-toolbar">
          <label htmlFor="model-picker">Model</label>
          <select
            id="model-picker"
            value={model}
            disabled={models.isPending || busy}
            onChange={(e) => void changeModel(e.target.value)}
          >
            {models.isPending && <option value="">Loading models…</option>}
            {models.data?.length === 0 && <option value="">No model available</option>}
            {model && !kb && !models.data?.some((m) => m.id === model) && (
              <option value={model}>{model}</option>
            )}
            {kb && <option value={model}>The answer model of {kb}</option>}
            {models.data?.map((m) => (
              <option key={m.id} value={m.id}>
                {m.id}
              </option>
            ))}
          </select>
          <KnowledgeBasePicker kb={kb} disabled={busy} onChoose={chooseKnowledgeBase} />
          {models.error && (
            <span className="error" role="alert">
              Models could not be loaded: {describeError(models.error)}{" "}
              <button type="button" className="small" onClick={() => models.refetch()}>
                Retry
              </button>
            </span>
          )}
        </div>
        {conversationId && conversation.isPending && (
          <p className="muted center" role="status">
            <span className="spinner" aria-hidden="true" /> Loading the conversation…
          </p>
        )}
        {notFound && (
          <div className="empty-state" role="alert">
            <h2>This conversation does not exist</h2>
            <p>
              It may have been deleted. <Link to="/chat">Start a new chat</Link>
            </p>
          </div>
        )}
        {conversation.error && !notFound && (
          <div className="error" role="alert">
            <p>The conversation could not be loaded: {describeError(conversation.error)}</p>
            <button type="button" onClick={() => conversation.refetch()}>
              Try again
            </button>
          </div>
        )}
        {!notFound && messages.length === 0 && streaming === null && !conversation.isLoading && (
          <div className="empty-state">
            <h2>Start a conversation</h2>
            <p className="muted">Answers stream in as the model writes them. Markdown, code and tables are shown formatted.</p>
          </div>
        )}
        {!notFound && (
          <MessageList
            messages={messages}
            streaming={streaming}
            streamingCitations={streamingCitations}
            canRegenerate={!busy}
            onRegenerate={regenerate}
            onOpenCitation={setOpenCitation}
            onRated={keepRating}
          />
        )}
        {openCitation && <CitationDrawer citation={openCitation} onClose={closeCitation} />}
        {error && (
          <p className="error banner" role="alert">
            {error}
          </p>
        )}
        {!notFound && (
          <Composer
            draft={draft}
            onDraft={setDraft}
            onSend={() => void send()}
            onStop={() => abort.current?.abort()}
            onAttach={(file) => void attach(file)}
            accept={limits.data?.extensions}
            attaching={attaching}
            streaming={busy}
            disabled={!model}
          />
        )}
      </section>
    </div>
  );
}
