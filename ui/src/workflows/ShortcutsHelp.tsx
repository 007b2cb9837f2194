/** The keyboard shortcuts, listed from the table the handler uses. */
import { SHORTCUTS } from "./shortcuts";

export function ShortcutsHelp({ onClose }: { onClose: () => void }) {
  return (
    <section className="wf-panel" aria-label="Keyboard shortcuts">
      <h2>Keyboard shortcuts <button type="button" className="link" onClick={onClose}>Close</button></h2>
      <table className="wf-shortcuts">
        <tbody>
          {SHORTCUTS.map((s) => (
            <tr key={s.keys}><th scope="row"><kbd>{s.keys}</kbd></th><td>{s.what}</td></tr>
          ))}
        </tbody>
      </table>
      <p className="muted">Shortcuts other than Ctrl/⌘ S wait while you type in a field.</p>
    </section>
  );
}
