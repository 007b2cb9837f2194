import { describeError } from "../api/client";
import { useKnowledgeBases } from "./knowledge";

interface Props {
  /** The knowledge base the conversation asks; null: the plain model. */
  kb: string | null;
  disabled: boolean;
  onChoose: (name: string) => void;
}

/** The knowledge bases the user may ask ("" for none), or why they could not be listed. */
export function KnowledgeBasePicker({ kb, disabled, onChoose }: Props) {
  const knowledgeBases = useKnowledgeBases();
  return (
    <>
      <label htmlFor="kb-picker">Knowledge base</label>
      <select
        id="kb-picker"
        value={kb ?? ""}
        disabled={disabled || knowledgeBases.isPending}
        onChange={(e) => onChoose(e.target.value)}
      >
        <option value="">None: ask the model</option>
        {kb && !knowledgeBases.data?.some((k) => k.name === kb) && <option value={kb}>{kb}</option>}
        {knowledgeBases.data?.map((k) => (
          <option key={k.id} value={k.name} title={k.description || undefined}>
            {k.name}
          </option>
        ))}
      </select>
      {knowledgeBases.error && (
        <span className="muted" role="status">
          Knowledge bases could not be listed: {describeError(knowledgeBases.error)}
        </span>
      )}
    </>
  );
}
