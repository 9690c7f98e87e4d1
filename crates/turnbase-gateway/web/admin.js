// The admin console, at /admin/: accounts, games, engines, mail, notification
// dead letters, the audit log and live counters. Every call goes through
// the gateway's admin forwarding, which passes admin sessions only.

import { call, setToken, token } from './api.js';
import { h, page, field, errorBox, busy, when, fill, toast, Scope } from './ui.js';
import { signInPage } from './signin.js';

let me = null;
let scope = new Scope();

const SECTIONS = [
  ['accounts', 'Accounts', accounts],
  ['games', 'Games', games],
  ['engines', 'Engines', engines],
  ['mail', 'Mail', mail],
  ['dead-letters', 'Dead letters', deadLetters],
  ['audit', 'Audit log', audit],
  ['live', 'Live counters', counters],
];

function nav() {
  fill(
    document.getElementById('nav'),
    me ? SECTIONS.map(([id, title]) => h('a', { href: `#/${id}` }, title)) : null,
    me ? h('a', { href: '/' }, 'Play') : null,
    me ? signOutButton() : null,
  );
}

function signOutButton() {
  const b = h('button', { type: 'button', class: 'small link' }, 'Sign out');
  b.addEventListener('click', async () => {
    await call('logout', { body: {} }).catch(() => {});
    setToken(null);
    me = null;
    render();
  });
  return b;
}

/** A reason asked for in words; null when the admin cancels. */
function reason(what) {
  const text = prompt(`Reason for ${what} (kept in the audit log):`);
  return text === null ? null : text.trim() || what;
}

function table(headers, rows, id) {
  return h(
    'div',
    { class: 'scroll' },
    h('table', { class: 'data', id }, h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))), h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted' }, 'Nothing here.')))),
  );
}

function action(label, box, run, after) {
  const b = h('button', { type: 'button', class: 'small' }, label);
  b.addEventListener('click', () => busy(b, box, async () => {
    const done = await run();
    if (done !== false) {
      toast(`${label}: done.`);
      if (after) await after();
    }
  }));
  return b;
}

async function accounts() {
  const q = h('input', { name: 'q', type: 'search', id: 'account-q', placeholder: 'name, email or id' });
  const err = errorBox();
  const out = h('div');
  async function load() {
    const r = await call('adminAccounts', { query: { q: q.value.trim(), limit: 50 } });
    fill(
      out,
      table(
        ['Name', 'Email', 'Kind', 'Role', 'Blocked', ''],
        r.items.map((a) =>
          h(
            'tr',
            { dataset: { account: a.id } },
            h('td', {}, a.display_name),
            h('td', {}, a.email || '—'),
            h('td', {}, a.is_guest ? 'guest' : 'email'),
            h('td', {}, a.role),
            h('td', {}, a.blocked_at ? `${when(a.blocked_at)}: ${a.blocked_reason || ''}` : 'no'),
            h(
              'td',
              {},
              a.blocked_at
                ? action('Unblock', err, () => call('adminUnblock', { params: { id: a.id }, body: {} }), load)
                : action('Block', err, async () => {
                    const why = reason(`blocking ${a.display_name}`);
                    if (why === null) return false;
                    return call('adminBlock', { params: { id: a.id }, body: { reason: why } });
                  }, load),
            ),
          ),
        ),
        'accounts',
      ),
    );
  }
  const form = h('form', { class: 'filters', onsubmit: (e) => (e.preventDefault(), busy(null, err, load)) }, field('Search', q), h('button', { type: 'submit' }, 'Search'));
  page('Accounts', form, err, out);
  await busy(null, err, load);
}

async function games() {
  const q = h('input', { name: 'q', type: 'search', id: 'game-q', placeholder: 'title or id' });
  const state = h('select', { name: 'state' }, ['', 'enrolling', 'starting', 'start_failed', 'running', 'paused', 'finished', 'cancelled'].map((s) => h('option', { value: s }, s || 'any state')));
  const err = errorBox();
  const out = h('div');
  async function load() {
    const r = await call('adminGames', { query: { q: q.value.trim(), state: state.value, limit: 50 } });
    fill(
      out,
      table(
        ['Title', 'Engine', 'State', 'Seats', ''],
        r.items.map((g) => {
          const id = { params: { id: g.id } };
          const live = g.state === 'running' || g.state === 'paused';
          const by = () => prompt('Extend by (e.g. 1h, 2d):', '1h');
          return h(
            'tr',
            { dataset: { game: g.id } },
            h('td', {}, g.title),
            h('td', {}, g.engine),
            h('td', {}, g.state, g.start_error ? h('small', { class: 'error' }, ` ${g.start_error}`) : null),
            h('td', {}, `${g.seats_taken}/${g.max_players}`),
            h(
              'td',
              { class: 'actions' },
              live ? action('Force turn', err, () => { const why = reason('forcing the turn'); return why === null ? false : call('adminForce', { ...id, body: { reason: why } }); }, load) : null,
              g.state === 'running' ? action('Pause', err, () => { const why = reason('pausing'); return why === null ? false : call('adminPause', { ...id, body: { reason: why } }); }, load) : null,
              g.state === 'paused' ? action('Resume', err, () => { const why = reason('resuming'); return why === null ? false : call('adminResume', { ...id, body: { reason: why } }); }, load) : null,
              live ? action('Extend', err, () => { const d = by(); if (!d) return false; const why = reason('extending'); return why === null ? false : call('adminExtend', { ...id, body: { by: d, reason: why } }); }, load) : null,
              g.state === 'start_failed' ? action('Retry start', err, () => call('adminRetryStart', { ...id, body: {} }), load) : null,
              !['finished', 'cancelled'].includes(g.state) ? action('Cancel', err, () => { const why = reason('cancelling'); return why === null ? false : call('adminCancel', { ...id, body: { reason: why } }); }, load) : null,
            ),
          );
        }),
        'games',
      ),
    );
  }
  const form = h('form', { class: 'filters', onsubmit: (e) => (e.preventDefault(), busy(null, err, load)) }, field('Search', q), field('State', state), h('button', { type: 'submit' }, 'Search'));
  page('Games', form, err, out);
  await busy(null, err, load);
}

async function engines() {
  const err = errorBox();
  const out = h('div');
  async function load() {
    const r = await call('adminRuntime', { query: { limit: 200 } });
    fill(
      out,
      table(
        ['Game', 'Engine', 'State', 'Address', 'Restarts', 'Last error', ''],
        r.items.map((e) =>
          h(
            'tr',
            {},
            h('td', {}, h('code', {}, e.game_id.slice(0, 8))),
            h('td', {}, e.engine),
            h('td', {}, e.state),
            h('td', {}, e.address || '—'),
            h('td', {}, String(e.restarts)),
            h('td', {}, e.last_error || ''),
            h('td', {}, action('Restart', err, () => call('adminRestart', { params: { game: e.game_id }, body: {} }), load)),
          ),
        ),
        'engines',
      ),
    );
  }
  page('Engines', err, out);
  await busy(null, err, load);
}

async function mail() {
  const status = h('select', { name: 'status' }, ['', 'pending', 'sending', 'sent', 'failed'].map((s) => h('option', { value: s }, s || 'any')));
  const err = errorBox();
  const out = h('div');
  async function load() {
    const r = await call('adminMail', { query: { status: status.value, limit: 50 } });
    fill(
      out,
      table(
        ['To', 'Subject', 'Status', 'Attempts', 'Last error', ''],
        r.items.map((d) =>
          h('tr', {}, h('td', {}, d.to), h('td', {}, d.subject), h('td', {}, d.status), h('td', {}, String(d.attempts)), h('td', {}, d.last_error || ''), h('td', {}, d.status === 'failed' ? action('Retry', err, () => call('adminMailRetry', { params: { id: d.id }, body: {} }), load) : null)),
        ),
        'mail',
      ),
    );
  }
  status.addEventListener('change', () => busy(null, err, load));
  page('Mail', field('Status', status), err, out);
  await busy(null, err, load);
}

async function deadLetters() {
  const err = errorBox();
  const out = h('div');
  async function load() {
    const r = await call('adminDeadLetters', { query: { limit: 50 } });
    fill(
      out,
      table(
        ['Kind', 'Channel', 'Target', 'Attempts', 'Last error', ''],
        r.routes.map((d) =>
          h('tr', {}, h('td', {}, d.kind), h('td', {}, d.channel), h('td', {}, d.target || '—'), h('td', {}, String(d.attempts_total)), h('td', {}, d.last_error || ''), h('td', {}, action('Requeue', err, () => call('adminRequeue', { params: { id: d.id }, body: {} }), load))),
        ),
        'dead-letters',
      ),
    );
  }
  page('Notification dead letters', err, out);
  await busy(null, err, load);
}

async function audit() {
  const err = errorBox();
  const out = h('div');
  const r = await call('adminAudit', { query: { limit: 100 } });
  fill(out, table(['When', 'Who', 'Action', 'Target', 'Detail'], r.items.map((a) => h('tr', {}, h('td', {}, when(a.at)), h('td', {}, a.actor_email || a.actor_id.slice(0, 8)), h('td', {}, a.action), h('td', {}, a.target), h('td', {}, h('code', {}, JSON.stringify(a.detail))))), 'audit'));
  page('Audit log', err, out);
}

/** Sums of the samples of `name` in Prometheus text, by one label. */
export function samples(text, name) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+([-+\d.eE]+|NaN)/);
    if (!m || m[1] !== name) continue;
    out.set(m[3] || '', (out.get(m[3] || '') || 0) + Number(m[4]));
  }
  return out;
}

function total(map) {
  let t = 0;
  for (const v of map.values()) t += v;
  return t;
}

async function counters(s) {
  const err = errorBox();
  const grid = h('dl', { class: 'counters', id: 'counters' });
  let last = null;
  async function load() {
    let text;
    try {
      text = await call('adminMetrics');
    } catch (e) {
      if (e.status === 404) throw new Error('This backend keeps no metrics: start it with BACKEND_METRICS_ADDR (turnbase up keeps them always).');
      throw e;
    }
    const now = Date.now();
    const turns = total(samples(text, 'game_turns_total'));
    const rate = last ? ((turns - last.turns) * 60000) / (now - last.at) : null;
    last = { turns, at: now };
    const row = (label, value) => [h('dt', {}, label), h('dd', {}, value)];
    fill(
      grid,
      row('Live connections', String(total(samples(text, 'edge_connections')))),
      row('Mail queue', String(total(samples(text, 'mail_queue_depth')))),
      row('Notification queue', String(total(samples(text, 'notification_queue_depth')))),
      row('Turns resolved', String(turns)),
      row('Turns per minute', rate === null ? 'measuring…' : rate.toFixed(1)),
    );
  }
  page('Live counters', h('p', { class: 'muted' }, 'From the processes’ own metrics, every 5 seconds.'), err, grid);
  await busy(null, err, load);
  s.every(5000, () => busy(null, err, load));
}

async function render() {
  scope.close();
  scope = new Scope();
  nav();
  if (!me) {
    signInPage(scope, {
      onSignedIn: (r) => {
        setToken(r.token);
        me = r.account;
        render();
      },
    });
    return;
  }
  if (me.role !== 'admin') {
    page('Admins only', h('p', {}, `${me.display_name} is not an admin. `), h('a', { href: '/' }, 'Back to the game'));
    return;
  }
  const id = (location.hash.match(/^#\/([\w-]+)/) || [])[1] || 'accounts';
  const section = SECTIONS.find(([key]) => key === id) || SECTIONS[0];
  try {
    await section[2](scope);
  } catch (err) {
    page(section[1], h('p', { class: 'error', role: 'alert' }, err.message));
  }
}

async function boot() {
  document.body.classList.add('admin');
  window.addEventListener('hashchange', render);
  window.addEventListener('turnbase:signed-out', () => {
    setToken(null);
    me = null;
    render();
  });
  if (token()) {
    try {
      me = await call('me');
    } catch {
      me = null;
    }
  }
  render();
}

boot();
