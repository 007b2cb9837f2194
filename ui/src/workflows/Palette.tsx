/** The blocks, by category: drag one onto the canvas, or press it to add it. */
import type { BlockInfo } from "./types";

export const DRAG_TYPE = "application/x-atrium-block";

interface Props {
  blocks: BlockInfo[];
  onAdd: (type: string) => void;
}

export function Palette({ blocks, onAdd }: Props) {
  const categories = [...new Set(blocks.map((b) => b.category))].sort();
  return (
    <nav className="wf-palette" aria-label="Blocks">
      {categories.map((category) => (
        <section key={category}>
          <h3>{category}</h3>
          <ul>
            {blocks
              .filter((b) => b.category === category)
              .map((block) => (
                <li key={block.type}>
                  <button
                    type="button"
                    className="wf-palette-item"
                    draggable
                    data-block-type={block.type}
                    title={`${block.description} (drag onto the canvas, or press to add)`}
                    onDragStart={(event) => {
                      event.dataTransfer.setData(DRAG_TYPE, block.type);
                      event.dataTransfer.effectAllowed = "move";
                    }}
                    onClick={() => onAdd(block.type)}
                  >
                    {block.title}
                  </button>
                </li>
              ))}
          </ul>
        </section>
      ))}
    </nav>
  );
}
