/** The one way the UI talks to Atrium: same-origin fetch with the session cookie, the
 * CSRF header on state-changing requests, and OpenAI-shaped errors as ApiError. */

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code: string | null = null,
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

/** Raised when the session is missing or expired: the app sends the user to sign in. */
export class SessionExpiredError extends ApiError {}

type Listener = () => void;
const expiredListeners = new Set<Listener>();

/** Called whenever a request finds the session gone (the app redirects to login). */
export function onSessionExpired(listener: Listener): () => void {
  expiredListeners.add(listener);
  return () => expiredListeners.delete(listener);
}

export function csrfToken(): string {
  const match = document.cookie.match(/(?:^|;\s*)atrium_csrf=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

const SAFE = new Set(["GET", "HEAD", "OPTIONS"]);

/** fetch() with the session's CSRF token; throws ApiError for any non-2xx answer. */
export async function apiFetch(path: string, init: RequestInit = {}): Promise<Response> {
  const method = (init.method ?? "GET").toUpperCase();
  const headers = new Headers(init.headers);
  if (!SAFE.has(method)) headers.set("X-CSRF-Token", csrfToken());
  // A string body is JSON; a FormData body gets its multipart boundary from the browser.
  if (typeof init.body === "string" && !headers.has("Content-Type")) {
    headers.set("Content-Type", "application/json");
  }
  const response = await fetch(path, { ...init, method, headers, credentials: "same-origin" });
  if (!response.ok) throw await toError(response, path);
  return response;
}

export async function apiJson<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await apiFetch(path, init);
  return (await response.json()) as T;
}

async function toError(response: Response, path: string): Promise<ApiError> {
  let message = `${response.status} ${response.statusText}`;
  let code: string | null = null;
  let param: string | null = null;
  try {
    const body = (await response.json()) as {
      error?: { message?: string; code?: string; param?: string };
    };
    message = body.error?.message ?? message;
    code = body.error?.code ?? null;
    param = body.error?.param ?? null;
  } catch {
    // Not JSON (a proxy's error page): keep the status line.
  }
  if (response.status === 401 && !path.startsWith("/v1/auth/login")) {
    expiredListeners.forEach((listener) => listener());
    return new SessionExpiredError(401, message, code, param);
  }
  return new ApiError(response.status, message, code, param);
}

export function describeError(error: unknown): string {
  if (error instanceof ApiError) return error.message;
  if (error instanceof DOMException && error.name === "AbortError") return "Stopped.";
  if (error instanceof TypeError) return "Atrium could not be reached. Check your connection.";
  return error instanceof Error ? error.message : String(error);
}
