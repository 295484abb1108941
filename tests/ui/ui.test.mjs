// Real-browser checks of the dashboard: live run graph, approvals from the UI, refusals.
// Run through ./run.sh, which prepares the namespace, the tokens and the operator.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { chromium } from 'playwright-core';

const URL = process.env.VIGIL_UI_URL;
const NS = process.env.VIGIL_UI_NS;
const LEAD = process.env.VIGIL_UI_TOKEN_LEAD;
const VIEWER = process.env.VIGIL_UI_TOKEN_VIEWER;
const SHOTS = process.env.VIGIL_UI_SCREENSHOTS || new globalThis.URL('../../docs/screenshots/', import.meta.url).pathname;
for (const [k, v] of Object.entries({ VIGIL_UI_URL: URL, VIGIL_UI_NS: NS, VIGIL_UI_TOKEN_LEAD: LEAD, VIGIL_UI_TOKEN_VIEWER: VIEWER })) {
  if (!v) throw new Error(`${k} is not set: run tests/ui/run.sh`);
}
mkdirSync(SHOTS, { recursive: true });

const kubectl = (...args) => execFileSync('kubectl', ['-n', NS, ...args], { encoding: 'utf8' });
function startRun(playbook, host) {
  const manifest = JSON.stringify({
    apiVersion: 'vigil.dev/v1alpha1', kind: 'Run',
    metadata: { generateName: `${playbook}-`, namespace: NS },
    spec: { playbookRef: { name: playbook }, inputs: { host }, trigger: { kind: 'manual', source: 'tests/ui' } },
  });
  return execFileSync('kubectl', ['-n', NS, 'create', '-o', 'jsonpath={.metadata.name}', '-f', '-'], { input: manifest, encoding: 'utf8' }).trim();
}

let browser;
async function signedIn(token) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${URL}/ui/`);
  await page.getByLabel('Kubernetes token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#who').filter({ hasText: 'Signed in as' }).waitFor();
  return page;
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});
after(async () => { await browser?.close(); });

let lead;
let quickRun;

test('a user signs in with a Kubernetes token and is named as the API server knows them', async () => {
  lead = await signedIn(LEAD);
  assert.match(await lead.locator('#who').textContent(), new RegExp(`system:serviceaccount:${NS}:ui-lead`));
});

test('a new Run appears in the runs list with its playbook', async () => {
  quickRun = startRun('ui-quick', 'ws-17');
  const row = lead.locator(`tr[data-run="${quickRun}"]`);
  await row.waitFor({ timeout: 20000 });
  assert.match(await row.textContent(), /ui-quick/);
});

test('the run graph updates live, without a reload, until the Run succeeds', async () => {
  await lead.locator(`a[href="#/run/${NS}/${quickRun}"]`).click();
  await lead.locator('#dag svg').waitFor({ timeout: 20000 });
  await lead.evaluate(() => { window.__sameDocument = true; });
  const seen = new Set();
  const deadline = Date.now() + 90000;
  let phase = '';
  while (Date.now() < deadline) {
    for (const p of await lead.locator('#dag [data-step]').evaluateAll((ns) => ns.map((n) => `${n.dataset.step}=${n.dataset.phase}`))) seen.add(p);
    phase = (await lead.locator('h1 .badge').textContent()) || '';
    if (phase === 'Succeeded' || phase === 'Failed') break;
    await lead.waitForTimeout(250);
  }
  assert.equal(phase, 'Succeeded', `run ended ${phase}; phases seen: ${[...seen].join(', ')}`);
  assert.ok(await lead.evaluate(() => window.__sameDocument), 'the page was reloaded');
  assert.ok(seen.has('enrich=Running') || seen.has('score=Running') || seen.has('enrich=Pending'), `no intermediate phase seen: ${[...seen]}`);
  assert.ok(seen.has('score=Succeeded'), 'the graph never showed the last step done');
  assert.equal(await lead.locator('#dag [data-step="score"]').getAttribute('data-phase'), 'Succeeded');
  await lead.screenshot({ path: `${SHOTS}/run-detail.png`, fullPage: false });
});

test('the audit timeline lists the Run\'s Kubernetes events', async () => {
  await lead.locator('ol.timeline li time').first().waitFor({ timeout: 20000 });
  assert.ok((await lead.locator('ol.timeline li').count()) >= 1);
});

test('a step\'s logs open from the run page', async () => {
  await lead.getByRole('link', { name: 'Logs of enrich' }).click();
  await lead.locator('pre').filter({ hasText: 'enriching ws-17' }).waitFor({ timeout: 20000 });
});

let gateRun;
test('a user without patch rights sees the decision refused', async () => {
  gateRun = startRun('ui-gate', 'ws-42');
  const viewer = await signedIn(VIEWER);
  await viewer.goto(`${URL}/ui/#/approvals`);
  const card = viewer.locator('article[data-approval]').filter({ hasText: gateRun });
  await card.waitFor({ timeout: 60000 });
  await card.getByRole('button', { name: 'Approve' }).click();
  const alert = card.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.textContent(), /may not (update|patch) approvals/);
  await viewer.screenshot({ path: `${tmpdir()}/vigil-ui-approval-refused.png` });
  assert.equal(kubectl('get', 'runs', gateRun, '-o', 'jsonpath={.status.steps.approve.phase}'), 'AwaitingApproval');
  await viewer.context().close();
});

test('an approver approves from the inbox and the Run continues to its end', async () => {
  await lead.goto(`${URL}/ui/#/approvals`);
  const card = lead.locator('article[data-approval]').filter({ hasText: gateRun });
  await card.waitFor({ timeout: 20000 });
  assert.match(await card.textContent(), /Contain ws-42\?/);
  await card.getByLabel('Reason').fill('confirmed beaconing');
  await card.getByRole('button', { name: 'Approve' }).click();
  await card.locator('.ok').filter({ hasText: 'Recorded: approved' }).waitFor();
  await lead.screenshot({ path: `${tmpdir()}/vigil-ui-approvals.png` });

  const approval = JSON.parse(kubectl('get', 'approvals', '-l', `vigil.dev/run=${gateRun}`, '-o', 'json')).items[0]
    ?? JSON.parse(kubectl('get', 'approvals', '-o', 'json')).items.find((a) => a.spec.runRef.name === gateRun);
  const decision = approval.spec.decisions[0];
  assert.equal(decision.via, 'ui');
  assert.equal(decision.reason, 'confirmed beaconing');
  assert.equal(decision.by, `system:serviceaccount:${NS}:ui-lead`);

  let phase = '';
  for (let i = 0; i < 120 && phase !== 'Succeeded' && phase !== 'Failed'; i++) {
    phase = kubectl('get', 'runs', gateRun, '-o', 'jsonpath={.status.phase}');
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(phase, 'Succeeded');
  assert.equal(kubectl('get', 'runs', gateRun, '-o', 'jsonpath={.status.steps.contain.phase}'), 'Succeeded');
});

test('the dashboard API refuses a request without a token', async () => {
  const res = await fetch(`${URL}/ui/api/runs`);
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error, 'unauthenticated');
});
