// vigil dashboard: runs, run detail (live DAG), approvals inbox, audit timeline. No build step.
'use strict';

const TOKEN_KEY = 'vigil.token';
const PHASES = ['Pending', 'Queued', 'Running', 'Succeeded', 'Failed', 'Cancelled'];
const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
let stopLive = () => {};
let pollTimer = null;

// --- small DOM helpers (text only, never innerHTML with data) ---
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
  return el;
}
function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}
const badge = (phase) => h('span', { class: `badge ph-${phase}` }, phase || '—');
const fmtTime = (t) => (t ? new Date(t).toLocaleString() : '—');
function fmtDuration(a, b) {
  if (!a) return '—';
  const ms = (b ? new Date(b) : new Date()) - new Date(a);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}
const json = (v) => h('pre', {}, JSON.stringify(v ?? null, null, 2));
function announce(text) { $('live').textContent = text; }

// --- API ---
class ApiError extends Error { constructor(status, msg) { super(msg); this.status = status; } }
function token() { return sessionStorage.getItem(TOKEN_KEY); }
async function api(path, opts = {}) {
  const res = await fetch(`/ui/api${path}`, {
    ...opts,
    headers: { Authorization: `Bearer ${token()}`, ...(opts.body ? { 'Content-Type': 'application/json' } : {}) },
  });
  if (res.status === 401) { signOut('Your token was not accepted; sign in again.'); throw new ApiError(401, 'unauthenticated'); }
  const type = res.headers.get('content-type') || '';
  const body = type.includes('json') ? await res.json() : await res.text();
  if (!res.ok) throw new ApiError(res.status, (body && body.detail) || (body && body.error) || String(body) || res.statusText);
  return body;
}

// Server-Sent Events over fetch, so the token travels in a header and never in a URL.
function sse(path, onEvent, onState) {
  const ctrl = new AbortController();
  (async () => {
    while (!ctrl.signal.aborted) {
      try {
        const res = await fetch(`/ui/api${path}`, { headers: { Authorization: `Bearer ${token()}`, Accept: 'text/event-stream' }, signal: ctrl.signal });
        if (!res.ok) { onState(`live updates refused: ${(await res.json().catch(() => ({}))).detail || res.status}`); return; }
        onState('live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let event = 'message', data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data += (data ? '\n' : '') + line.slice(5).replace(/^ /, '');
            }
            if (data) onEvent(event, data);
          }
        }
      } catch (e) { if (ctrl.signal.aborted) return; }
      onState('reconnecting');
      await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => ctrl.abort();
}

// --- session ---
function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  route();
  if (message) $('login-error').textContent = message;
}
async function showWho() {
  try { const me = await api('/whoami'); $('who').textContent = `Signed in as ${me.username}`; $('signout').hidden = false; } catch (e) { /* shown elsewhere */ }
}

// --- router ---
function route() {
  stopLive(); stopLive = () => {};
  clearInterval(pollTimer);
  const view = $('view');
  view.replaceChildren();
  if (!token()) { $('login').hidden = false; $('who').textContent = ''; $('signout').hidden = true; $('token').focus(); return; }
  $('login').hidden = true;
  const parts = (location.hash.replace(/^#\/?/, '') || 'runs').split('/').map(decodeURIComponent);
  for (const a of document.querySelectorAll('nav a')) a.removeAttribute('aria-current');
  if (parts[0] === 'run' && parts.length >= 3) { $('nav-runs').setAttribute('aria-current', 'page'); return runDetail(view, parts[1], parts[2]); }
  if (parts[0] === 'logs' && parts.length >= 4) return logsView(view, parts[1], parts[2], parts[3]);
  if (parts[0] === 'approvals') { $('nav-approvals').setAttribute('aria-current', 'page'); return approvalsView(view); }
  $('nav-runs').setAttribute('aria-current', 'page');
  return runsView(view);
}

function failure(view, e) { view.append(h('p', { class: 'error', role: 'alert' }, e.message)); }

// --- runs list ---
const filters = { playbook: '', phase: '', severity: '', since: '' };
async function runsView(view) {
  const title = h('h1', {}, 'Runs');
  const select = (id, label, options) => [
    h('label', { for: id }, label),
    h('select', { id, name: id, onchange: (ev) => { filters[id] = ev.target.value; load(); } },
      options.map(([v, t]) => h('option', { value: v, selected: filters[id] === v }, t))),
  ];
  const playbookSel = select('playbook', 'Playbook', [['', 'all']]);
  const form = h('form', { class: 'filters', onsubmit: (e) => e.preventDefault() },
    h('span', {}, playbookSel),
    h('span', {}, select('phase', 'Phase', [['', 'all'], ...PHASES.map((p) => [p, p])])),
    h('span', {}, select('severity', 'Severity', [['', 'all'], ['critical', 'critical'], ['high', 'high'], ['medium', 'medium'], ['low', 'low']])),
    h('span', {}, select('since', 'Created', [['', 'any time'], ['3600', 'last hour'], ['86400', 'last 24 hours'], ['604800', 'last 7 days']])),
    h('button', { type: 'button', onclick: () => load() }, 'Refresh'));
  const counts = h('ul', { class: 'counts', 'aria-label': 'Runs per phase' });
  const body = h('tbody');
  const table = h('table', {}, h('caption', { class: 'visually-hidden' }, 'Runs, newest first'),
    h('thead', {}, h('tr', {}, ['Run', 'Playbook', 'Phase', 'Progress', 'Severity', 'Trigger', 'Created', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))), body);
  const status = h('p', { role: 'status', class: 'muted' });
  view.append(title, form, counts, status, table);

  async function load() {
    const q = new URLSearchParams();
    for (const k of ['playbook', 'phase', 'severity']) if (filters[k]) q.set(k, filters[k]);
    if (filters.since) q.set('since', new Date(Date.now() - Number(filters.since) * 1000).toISOString());
    let data;
    try { data = await api(`/runs?${q}`); } catch (e) { status.className = 'error'; status.textContent = e.message; return; }
    status.className = 'muted';
    status.textContent = `${data.runs.length} run${data.runs.length === 1 ? '' : 's'}`;
    const pb = $('playbook');
    if (pb) pb.replaceChildren(h('option', { value: '' }, 'all'), ...data.playbooks.map((p) => h('option', { value: p, selected: filters.playbook === p }, p)));
    counts.replaceChildren(...PHASES.map((p) => h('li', {}, h('span', { class: `badge ph-${p}` }, `${p}: ${data.counts[p] || 0}`))));
    body.replaceChildren(...data.runs.map((r) => h('tr', { 'data-run': r.name },
      h('td', {}, h('a', { href: `#/run/${encodeURIComponent(r.namespace)}/${encodeURIComponent(r.name)}` }, r.name), h('div', { class: 'muted' }, r.namespace)),
      h('td', {}, r.playbook), h('td', {}, badge(r.phase)), h('td', {}, r.progress || '—'),
      h('td', {}, r.severity || '—'), h('td', {}, r.trigger || '—'), h('td', {}, fmtTime(r.createdAt)),
      h('td', {}, fmtDuration(r.startedAt, r.finishedAt)))));
  }
  await load();
  pollTimer = setInterval(load, 5000);
}

// --- run detail ---
function layout(spec) {
  const steps = (spec.steps || []).map((st) => ({ name: st.name, deps: st.dependsOn || [], approval: !!st.approval, forEach: !!st.forEach }));
  const fin = (spec.finally || []).map((st) => ({ name: st.name, deps: [], finally: true }));
  const level = {};
  const byName = Object.fromEntries(steps.map((st) => [st.name, st]));
  const lv = (n, seen = new Set()) => {
    if (level[n] !== undefined) return level[n];
    if (seen.has(n) || !byName[n]) return 0;
    seen.add(n);
    return (level[n] = byName[n].deps.length ? 1 + Math.max(...byName[n].deps.map((d) => lv(d, seen))) : 0);
  };
  steps.forEach((st) => lv(st.name));
  const last = steps.length ? Math.max(...steps.map((st) => level[st.name])) : -1;
  fin.forEach((st) => { level[st.name] = last + 1; st.deps = []; });
  const all = [...steps, ...fin];
  const cols = {};
  for (const st of all) (cols[level[st.name]] ||= []).push(st);
  const W = 170, H = 44, GX = 60, GY = 18;
  const pos = {};
  for (const [c, list] of Object.entries(cols)) list.forEach((st, i) => { pos[st.name] = { x: 10 + c * (W + GX), y: 10 + i * (H + GY) }; });
  const rows = Math.max(1, ...Object.values(cols).map((l) => l.length));
  return { all, pos, W, H, width: 20 + (Object.keys(cols).length) * (W + GX) - GX, height: 20 + rows * (H + GY) - GY, fin: fin.length > 0, last };
}

function drawDag(container, run, ns) {
  const spec = run.status?.frozen?.spec;
  if (!spec) { container.replaceChildren(h('p', { class: 'muted' }, 'The graph appears once the Run has started.')); return; }
  const L = layout(spec);
  const steps = run.status.steps || {};
  const svg = s('svg', { width: L.width, height: L.height, viewBox: `0 0 ${L.width} ${L.height}`, role: 'group', 'aria-label': 'Step graph' });
  const edges = s('g');
  for (const st of L.all) for (const d of st.deps) {
    const a = L.pos[d], b = L.pos[st.name];
    if (!a || !b) continue;
    const x1 = a.x + L.W, y1 = a.y + L.H / 2, x2 = b.x, y2 = b.y + L.H / 2, mx = (x1 + x2) / 2;
    edges.append(s('path', { class: 'edge', d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
  }
  const defs = s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#5b6474' })));
  svg.append(defs, edges);
  for (const st of L.all) {
    const p = L.pos[st.name];
    const phase = steps[st.name]?.phase || 'Pending';
    const label = `${st.name}${st.finally ? ' (finally)' : ''}: ${phase}`;
    const link = s('a', { href: `#step-${st.name}`, class: 'node', 'data-step': st.name, 'data-phase': phase, 'aria-label': label },
      s('title', {}, label),
      s('rect', { x: p.x, y: p.y, width: L.W, height: L.H, rx: 6, class: `fill-${phase}`, 'stroke-dasharray': st.finally ? '5 3' : undefined }),
      s('text', { x: p.x + 10, y: p.y + 18 }, (st.approval ? '✋ ' : st.forEach ? '⧉ ' : '') + st.name),
      s('text', { x: p.x + 10, y: p.y + 35, class: 'phase' }, phase));
    link.addEventListener('click', (e) => { e.preventDefault(); document.getElementById(`step-${st.name}`)?.focus(); });
    svg.append(link);
  }
  container.replaceChildren(svg);
}

function stepTable(run, ns, name) {
  const spec = run.status?.frozen?.spec || {};
  const order = [...(spec.steps || []), ...(spec.finally || [])].map((st) => st.name);
  const steps = run.status?.steps || {};
  for (const n of Object.keys(steps)) if (!order.includes(n)) order.push(n);
  const rows = order.map((n) => {
    const st = steps[n] || {};
    const unit = st.unit || {};
    const errors = [unit.error, ...(st.items || []).map((it) => it.error)].filter(Boolean);
    return h('tr', { id: `step-${n}`, tabindex: '-1', 'data-step': n },
      h('th', { scope: 'row' }, n), h('td', {}, badge(st.phase || 'Pending'), st.reason && st.reason !== st.phase ? h('div', { class: 'muted' }, st.reason) : null),
      h('td', {}, String(st.attempts || 0)), h('td', {}, fmtTime(st.startedAt)), h('td', {}, fmtDuration(st.startedAt, st.finishedAt)),
      h('td', {}, unit.exitCode ?? '—'),
      h('td', {}, errors.length ? h('span', { class: 'error' }, errors.join('; ')) : (st.message || '—')),
      h('td', {}, st.approval ? h('a', { href: '#/approvals' }, 'approval') : null,
        (unit.job || st.items) ? h('a', { href: `#/logs/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/${encodeURIComponent(n)}` }, `Logs of ${n}`) : null),
    );
  });
  return h('table', {}, h('caption', { class: 'visually-hidden' }, 'Steps'),
    h('thead', {}, h('tr', {}, ['Step', 'Phase', 'Attempts', 'Started', 'Took', 'Exit code', 'Error / message', 'Links'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows));
}

function outputsBlock(run) {
  const steps = run.status?.steps || {};
  const list = Object.entries(steps).filter(([, st]) => st.outputs);
  if (!list.length) return h('p', { class: 'muted' }, 'No outputs yet.');
  return h('div', {}, list.map(([n, st]) => h('details', {}, h('summary', {}, n), json(st.outputs))));
}

async function runDetail(view, ns, name) {
  const head = h('div');
  const liveState = h('p', { class: 'muted', role: 'status' }, 'connecting…');
  const dag = h('div', { class: 'dag', id: 'dag' });
  const stepsBox = h('div', { id: 'steps' });
  const inputs = h('div');
  const outputs = h('div');
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Audit timeline' });
  view.append(h('p', {}, h('a', { href: '#/runs' }, '← All runs')), head, liveState,
    h('h2', {}, 'Graph'), dag, h('h2', {}, 'Steps'), stepsBox,
    h('div', { class: 'grid' }, h('section', {}, h('h2', {}, 'Inputs'), inputs), h('section', {}, h('h2', {}, 'Outputs'), outputs)),
    h('h2', {}, 'Audit timeline'), timeline);
  const phases = {};
  function render(run) {
    const st = run.status || {};
    head.replaceChildren(h('h1', {}, `Run ${name} `, badge(st.phase || 'Pending')),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Namespace'), h('dd', {}, ns),
        h('dt', {}, 'Playbook'), h('dd', {}, run.spec?.playbookRef?.name || '—'),
        h('dt', {}, 'Progress'), h('dd', { id: 'progress' }, st.progress || '—'),
        h('dt', {}, 'Trigger'), h('dd', {}, run.spec?.trigger ? `${run.spec.trigger.kind}${run.spec.trigger.source ? ` (${run.spec.trigger.source})` : ''}` : '—'),
        h('dt', {}, 'Started'), h('dd', {}, fmtTime(st.startedAt)),
        h('dt', {}, 'Duration'), h('dd', {}, fmtDuration(st.startedAt, st.finishedAt)),
        st.message ? [h('dt', {}, 'Message'), h('dd', {}, st.message)] : []));
    drawDag(dag, run, ns);
    stepsBox.replaceChildren(stepTable(run, ns, name));
    inputs.replaceChildren(json(st.inputs || run.spec?.inputs));
    outputs.replaceChildren(outputsBlock(run));
    const changes = [];
    for (const [n, s2] of Object.entries(st.steps || {})) { if (phases[n] && phases[n] !== s2.phase) changes.push(`${n} ${s2.phase}`); phases[n] = s2.phase; }
    if (phases.__run && phases.__run !== st.phase) changes.push(`run ${st.phase}`);
    phases.__run = st.phase;
    if (changes.length) announce(`Updated: ${changes.join(', ')}`);
  }
  async function loadTimeline() {
    try {
      const events = await api(`/events/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
      timeline.replaceChildren(...(events.length ? events.map((e) => h('li', {}, h('time', { datetime: e.time || '' }, fmtTime(e.time)), ' ',
        h('span', { class: e.type }, e.reason), e.count > 1 ? ` ×${e.count}` : '', ` — ${e.message}`, e.source ? h('span', { class: 'muted' }, ` (${e.source})`) : null))
        : [h('li', { class: 'muted' }, 'No events recorded.')]));
    } catch (e) { timeline.replaceChildren(h('li', { class: 'error' }, e.message)); }
  }
  try { render(await api(`/runs/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`)); } catch (e) { return failure(view, e); }
  loadTimeline();
  let pending = null;
  stopLive = sse(`/runs/${encodeURIComponent(ns)}/${encodeURIComponent(name)}/events`, (event, data) => {
    if (event === 'run') { render(JSON.parse(data)); clearTimeout(pending); pending = setTimeout(loadTimeline, 500); }
    if (event === 'deleted') liveState.textContent = 'This Run was deleted.';
  }, (state) => { liveState.textContent = state === 'live' ? 'Live: updates as the Run changes.' : state; liveState.dataset.state = state; });
}

async function logsView(view, ns, run, step) {
  view.append(h('p', {}, h('a', { href: `#/run/${encodeURIComponent(ns)}/${encodeURIComponent(run)}` }, `← Run ${run}`)),
    h('h1', {}, `Logs of step ${step}`));
  try { view.append(h('pre', { tabindex: '0', 'aria-label': `Logs of step ${step}` }, await api(`/logs/${encodeURIComponent(ns)}/${encodeURIComponent(run)}/${encodeURIComponent(step)}`))); } catch (e) { failure(view, e); }
}

// --- approvals inbox ---
async function approvalsView(view) {
  view.append(h('h1', {}, 'Approvals'));
  const list = h('div', { id: 'approvals' });
  const status = h('p', { role: 'status', class: 'muted' });
  view.append(status, list);
  async function load() {
    let items;
    try { items = await api('/approvals'); } catch (e) { status.className = 'error'; status.textContent = e.message; return; }
    const pending = items.filter((a) => a.pending).length;
    status.className = 'muted';
    status.textContent = `${pending} pending, ${items.length - pending} decided`;
    list.replaceChildren(...items.map(card));
  }
  function card(a) {
    const id = `${a.namespace}-${a.name}`;
    const result = h('p', { 'aria-live': 'assertive' });
    const reason = h('textarea', { id: `reason-${id}`, rows: 2, maxlength: 1024 });
    async function decide(decision, btns) {
      btns.forEach((b) => { b.disabled = true; });
      result.className = ''; result.textContent = 'Sending…';
      try {
        await api(`/approvals/${encodeURIComponent(a.namespace)}/${encodeURIComponent(a.name)}/decision`, { method: 'POST', body: JSON.stringify({ decision, reason: reason.value }) });
        result.className = 'ok'; result.setAttribute('role', 'status'); result.textContent = `Recorded: ${decision}.`;
        announce(`Decision ${decision} recorded for ${a.name}`);
        setTimeout(load, 1500);
      } catch (e) {
        result.className = 'error'; result.setAttribute('role', 'alert'); result.textContent = `Refused: ${e.message}`;
        btns.forEach((b) => { b.disabled = false; });
      }
    }
    const approve = h('button', { type: 'button', class: 'primary' }, 'Approve');
    const deny = h('button', { type: 'button', class: 'danger' }, 'Deny');
    approve.addEventListener('click', () => decide('approved', [approve, deny]));
    deny.addEventListener('click', () => decide('denied', [approve, deny]));
    const approvers = [...(a.approvers?.users || []), ...(a.approvers?.groups || []).map((g) => `group ${g}`)].join(', ') || '—';
    return h('article', { class: `card${a.pending ? ' pending' : ''}`, 'data-approval': a.name, 'aria-labelledby': `title-${id}` },
      h('h2', { id: `title-${id}` }, a.message || a.name, ' ', a.pending ? badge('AwaitingApproval') : badge(a.decision)),
      h('dl', { class: 'kv' },
        h('dt', {}, 'Run'), h('dd', {}, h('a', { href: `#/run/${encodeURIComponent(a.namespace)}/${encodeURIComponent(a.run)}` }, a.run), ` (${a.namespace})`),
        h('dt', {}, 'Step'), h('dd', {}, a.step),
        h('dt', {}, 'Approvers'), h('dd', {}, approvers, a.quorum > 1 ? ` — ${a.quorum} needed` : ''),
        ...Object.entries(a.context || {}).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]),
        a.expiresAt ? [h('dt', {}, 'Expires'), h('dd', {}, fmtTime(a.expiresAt))] : [],
        a.pending ? [] : [h('dt', {}, 'Decided by'), h('dd', {}, `${a.decidedBy || '—'} at ${fmtTime(a.decidedAt)}`), h('dt', {}, 'Reason'), h('dd', {}, a.reason || '—')],
        (a.decisions || []).length ? [h('dt', {}, 'Decisions'), h('dd', {}, a.decisions.map((d) => `${d.decision} by ${d.by || '?'}${d.via ? ` via ${d.via}` : ''}${d.reason ? `: ${d.reason}` : ''}`).join('; '))] : []),
      a.pending ? h('div', { class: 'decide' }, h('div', {}, h('label', { for: `reason-${id}` }, 'Reason'), h('br'), reason), approve, deny) : null,
      result);
  }
  await load();
  // New requests show up on their own, unless the user is in the middle of a decision.
  pollTimer = setInterval(() => {
    const busy = list.contains(document.activeElement) || [...list.querySelectorAll('textarea')].some((t) => t.value);
    if (!busy) load();
  }, 5000);
}

// --- start ---
document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = $('token').value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $('token').value = '';
    $('login-error').textContent = '';
    try { await api('/whoami'); } catch (err) { if (err.status !== 401) $('login-error').textContent = err.message; return; }
    showWho();
    route();
    $('main').focus();
  });
  $('signout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);
  if (token()) showWho();
  route();
});
