import type { NodeRow, Snapshot, StatusBody, StreamEvent, WorkloadRow } from './types.js';

/** The JSON API answered 401: the token is wrong or was never given. */
export class Unauthorized extends Error {}

const TOKEN_KEY = 'silo-dashboard-token';

/** The token lives in sessionStorage: gone with the tab, never in a cookie the browser would send by itself. */
export const tokenStore = {
  get: (): string | null => sessionStorage.getItem(TOKEN_KEY),
  set: (token: string): void => sessionStorage.setItem(TOKEN_KEY, token),
  clear: (): void => sessionStorage.removeItem(TOKEN_KEY),
};

async function getJson<T>(path: string, token: string): Promise<T> {
  const res = await fetch(path, { headers: { authorization: `Bearer ${token}` }, cache: 'no-store' });
  if (res.status === 401) throw new Unauthorized('missing or wrong bearer token');
  if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
  return (await res.json()) as T;
}

/** Everything one refresh shows, read in parallel from the control API (docs/api.md). */
export async function fetchSnapshot(token: string): Promise<Snapshot> {
  const [status, nodes, workloads] = await Promise.all([
    getJson<StatusBody>('/v1/status', token),
    getJson<{ nodes: NodeRow[] }>('/v1/nodes', token),
    getJson<{ workloads: WorkloadRow[] }>('/v1/workloads', token),
  ]);
  return { status, nodes: nodes.nodes, workloads: workloads.workloads };
}

/**
 * Reads GET /v1/events until it ends or `signal` aborts. EventSource cannot
 * send an Authorization header, so this is fetch with a stream reader and
 * the few lines of the text/event-stream format the agent writes.
 */
export async function readEvents(
  token: string,
  signal: AbortSignal,
  onEvent: (event: StreamEvent) => void,
): Promise<void> {
  const res = await fetch('/v1/events', { headers: { authorization: `Bearer ${token}` }, signal });
  if (res.status === 401) throw new Unauthorized('missing or wrong bearer token');
  if (!res.ok || res.body === null) throw new Error(`/v1/events: HTTP ${res.status}`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const parsed = parseBlock(block);
      if (parsed !== null) onEvent(parsed);
    }
  }
}

function parseBlock(block: string): StreamEvent | null {
  let event = 'message';
  const data: string[] = [];
  for (const line of block.split('\n')) {
    // Lines starting with ":" are the keep-alive comments.
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
  }
  if (data.length === 0) return null;
  try {
    const value: unknown = JSON.parse(data.join('\n'));
    return {
      event,
      data: typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : {},
    };
  } catch {
    return null;
  }
}
