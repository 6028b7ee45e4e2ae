/**
 * A server-sent-events reader for the agent's `/v1/events` (docs/api.md):
 * feed it text as it arrives, get whole events back. Pure. Comment lines
 * (keep-alives) and fields other than `event` and `data` are skipped; an
 * event whose data is not JSON is returned with `data: null` and `raw`.
 */
export interface ServerEvent {
  event: string;
  data: unknown;
  /** The data text when it was not JSON. */
  raw?: string;
}

/** Largest event text kept while waiting for its end: a stream that never ends one is not buffered forever. */
const MAX_PENDING_CHARS = 1 << 20;

export class SseReader {
  private pending = '';

  /** Events completed by `text` (appended to what came before). */
  push(text: string): ServerEvent[] {
    this.pending += text.replace(/\r\n?/g, '\n');
    const events: ServerEvent[] = [];
    for (;;) {
      const end = this.pending.indexOf('\n\n');
      if (end < 0) break;
      const block = this.pending.slice(0, end);
      this.pending = this.pending.slice(end + 2);
      const event = parseBlock(block);
      if (event !== null) events.push(event);
    }
    if (this.pending.length > MAX_PENDING_CHARS) this.pending = '';
    return events;
  }
}

function parseBlock(block: string): ServerEvent | null {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    if (line === '' || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  if (data.length === 0) return null;
  const text = data.join('\n');
  try {
    return { event, data: JSON.parse(text) as unknown };
  } catch {
    return { event, data: null, raw: text };
  }
}
