/** A document put into a conversation ("analyze this"): checked here against the server's
 * limits, read into text by the server (which checks again), kept as a message. */
import { apiFetch, apiJson } from "../api/client";
import type { ChatMessage } from "../api/types";

export interface AttachmentLimits {
  max_bytes: number;
  max_chars: number;
  extensions: string[];
}

export interface Attachment {
  filename: string;
  doc_type: string;
  bytes: number;
  chars: number;
  truncated: boolean;
  text: string;
}

function sizeText(bytes: number): string {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} bytes`;
}

/** Why the file cannot be attached, or null when it may be sent. */
export function attachmentProblem(file: { name: string; size: number }, limits: AttachmentLimits): string | null {
  const dot = file.name.lastIndexOf(".");
  const extension = dot > 0 ? file.name.slice(dot).toLowerCase() : "";
  if (!limits.extensions.includes(extension)) {
    return `${file.name}: this type of file cannot be read. Supported: ${limits.extensions.join(", ")}.`;
  }
  if (file.size === 0) return `${file.name} is empty.`;
  if (file.size > limits.max_bytes) {
    return `${file.name} is ${sizeText(file.size)}; at most ${sizeText(limits.max_bytes)} can be attached.`;
  }
  return null;
}

export const ATTACHMENT_MARK = "attachment";

/** The conversation message that carries a document's text to the model. */
export function attachmentMessage(attachment: Attachment): ChatMessage {
  const cut = attachment.truncated ? " (cut to the first part)" : "";
  return {
    role: "user",
    content: `Here is the document ${attachment.filename}${cut}. Use it to answer my next questions.\n\n${attachment.text}`,
    meta: {
      [ATTACHMENT_MARK]: attachment.filename,
      doc_type: attachment.doc_type,
      bytes: attachment.bytes,
      truncated: attachment.truncated,
    },
  };
}

export function fetchLimits(): Promise<AttachmentLimits> {
  return apiJson<AttachmentLimits>("/v1/attachments");
}

export async function uploadAttachment(file: File): Promise<Attachment> {
  const form = new FormData();
  form.append("file", file, file.name);
  // No Content-Type header: the browser writes the multipart boundary itself.
  const response = await apiFetch("/v1/attachments", { method: "POST", body: form });
  return (await response.json()) as Attachment;
}
