import { fetchSnapshot, readEvents, tokenStore, Unauthorized } from './api.js';
import { byId, clock, el, prependCapped } from './dom.js';
import { renderGraph } from './graph.js';
import { MoveTracker } from './moves.js';
import { renderConvergence, renderNodes, renderWorkloads } from './tables.js';
import type { StreamEvent } from './types.js';

/**
 * The silo dashboard (docs/api.md, "Dashboard"): asks once for the API
 * token, then polls the JSON API every second and follows the event stream;
 * a state change on the stream refreshes at once.
 */

const POLL_MS = 1000;
const RETRY_STREAM_MS = 2000;

const login = byId<HTMLFormElement>('login');
const board = byId('board');
const conn = byId('conn');
const logout = byId<HTMLButtonElement>('logout');
const moves = new MoveTracker(byId('moves'));

let session: AbortController | null = null;

function showLogin(message: string): void {
  session?.abort();
  session = null;
  tokenStore.clear();
  board.hidden = true;
  logout.hidden = true;
  login.hidden = false;
  byId('login-error').textContent = message;
  byId<HTMLInputElement>('token').focus();
}

function setLive(live: boolean, text: string): void {
  conn.textContent = text;
  conn.className = live ? 'badge live' : 'badge';
}

async function refresh(token: string): Promise<void> {
  const snap = await fetchSnapshot(token);
  byId('whoami').textContent = `${snap.status.nodeId} · org ${snap.status.org} · ${snap.status.peers} peers`;
  renderNodes(byId<HTMLTableElement>('nodes'), snap.nodes);
  renderWorkloads(byId<HTMLTableElement>('workloads'), snap.workloads, snap.nodes);
  renderConvergence(byId<HTMLTableElement>('convergence'), byId('convergence-summary'), snap);
  renderGraph(byId('graph'), snap);
  moves.update(snap);
  document.body.dataset.updated = String(snap.status.now);
}

function describe(e: StreamEvent): string {
  const d = e.data;
  switch (e.event) {
    case 'hello':
      return `hello from ${String(d.nodeId)}`;
    case 'state':
      return `${String(d.doc)} changed (${String(d.origin)}) → ${String(d.digest).slice(0, 12)}`;
    case 'liveness':
      return `${String(d.nodeId)} is ${String(d.state)}`;
    default:
      return JSON.stringify(d);
  }
}

async function follow(token: string, signal: AbortSignal, poke: () => void): Promise<void> {
  const list = byId('events');
  while (!signal.aborted) {
    try {
      await readEvents(token, signal, (e) => {
        setLive(true, 'live');
        const at = typeof e.data.at === 'number' ? e.data.at : Date.now();
        prependCapped(
          list,
          el(
            'li',
            { 'data-event': e.event },
            el('span', { class: 'time' }, clock(at)),
            el('span', { class: String(e.data.state ?? '') }, `${e.event}: ${describe(e)}`),
          ),
          200,
        );
        if (e.event !== 'hello') poke();
      });
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin('The agent refused the token.');
      if (signal.aborted) return;
    }
    setLive(false, 'stream lost, retrying');
    await new Promise((resolve) => setTimeout(resolve, RETRY_STREAM_MS));
  }
}

function start(token: string): void {
  session?.abort();
  const controller = new AbortController();
  session = controller;
  login.hidden = true;
  byId('login-error').textContent = '';
  board.hidden = false;
  logout.hidden = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  const tick = async (): Promise<void> => {
    clearTimeout(timer);
    if (controller.signal.aborted || running) return;
    running = true;
    try {
      await refresh(token);
    } catch (err) {
      if (err instanceof Unauthorized) return showLogin('The agent refused the token.');
      setLive(false, 'agent unreachable');
    } finally {
      running = false;
    }
    if (!controller.signal.aborted) timer = setTimeout(() => void tick(), POLL_MS);
  };
  void tick();
  void follow(token, controller.signal, () => void tick());
}

login.addEventListener('submit', (event) => {
  event.preventDefault();
  const input = byId<HTMLInputElement>('token');
  const token = input.value.trim();
  input.value = '';
  if (token === '') return;
  tokenStore.set(token);
  start(token);
});

logout.addEventListener('click', () => showLogin(''));

const saved = tokenStore.get();
if (saved === null) showLogin('');
else start(saved);
