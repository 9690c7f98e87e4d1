// The lobby: open games with filters, creating a game (a settings form
// drawn from the engine's JSON Schema, a schedule with a preview of the
// next turns in the reader's zone, bot seats), and "my games" with whose
// move it is.

import { call } from './api.js';
import { h, page, field, errorBox, busy, when, until, fill, localZone } from './ui.js';

let enginesCache = null;
export async function engines() {
  if (!enginesCache) enginesCache = (await call('engines')).items;
  return enginesCache;
}

export function gameCard(g, extra) {
  return h(
    'li',
    { class: 'game', dataset: { game: g.id } },
    h('a', { href: `#/games/${g.id}` }, h('strong', {}, g.title)),
    h('span', { class: 'muted' }, ` ${g.engine} · ${g.seats_taken}/${g.max_players} seats · ${g.state}`),
    g.state === 'enrolling' ? h('small', { class: 'muted' }, ` · enrolment closes ${when(g.enrol_deadline)}`) : null,
    extra || null,
  );
}

export async function lobbyPage(scope, ctx) {
  const list = h('ul', { class: 'list', id: 'open-games' });
  const err = errorBox();
  const kinds = await engines();
  const engine = h('select', { name: 'engine' }, h('option', { value: '' }, 'Any'), kinds.map((k) => h('option', { value: k.name }, k.title)));
  const free = h('input', { name: 'free_seats', type: 'number', min: 0, max: 16, value: 1, inputmode: 'numeric' });
  let next = null;
  const more = h('button', { type: 'button', hidden: true }, 'More games');
  async function load(append = false) {
    const r = await call('openGames', { query: { state: 'enrolling', engine: engine.value, free_seats: free.value, before: append ? next : undefined, limit: 20 } });
    next = r.next;
    more.hidden = !next;
    const items = r.items.map((g) => gameCard(g));
    if (append) list.append(...items);
    else fill(list, items.length ? items : h('li', { class: 'muted' }, 'No open games match. Create one!'));
  }
  const filters = h(
    'form',
    { class: 'filters', onchange: () => busy(null, err, () => load()), onsubmit: (e) => e.preventDefault() },
    field('Engine', engine),
    field('Free seats at least', free),
  );
  more.addEventListener('click', () => busy(more, err, () => load(true)));
  page('Lobby', h('p', {}, h('a', { class: 'button primary', href: '#/games/new', id: 'new-game' }, 'Create a game'), ' ', h('a', { class: 'button', href: '#/mine' }, 'My games')), filters, err, list, more);
  await busy(null, err, () => load());
  for (const kind of ['lobby.game_state_changed', 'lobby.game_started']) {
    const off = ctx.live.on(kind, () => load().catch(() => {}));
    scope.add(off);
  }
}

export async function myGames(scope, ctx) {
  const list = h('ul', { class: 'list', id: 'my-games' });
  const err = errorBox();
  page('My games', err, list);
  async function load() {
    const r = await call('myGames', { query: { limit: 50 } });
    const rows = await Promise.all(
      r.items.map(async (item) => {
        const g = item.game;
        let status = item.seat ? `as ${item.seat.race_name}` : item.application ? `application ${item.application.status}` : 'owner';
        let mine = false;
        if (item.seat && (g.state === 'running' || g.state === 'paused')) {
          try {
            const c = await call('clock', { params: { id: g.id } });
            mine = c.to_move.some((s) => s.seat_id === item.seat.id) && !c.submitted.includes(item.seat.id);
            const names = c.to_move.map((s) => s.race_name).join(', ');
            status += mine ? ' · your move' : ` · waiting for ${names || 'the turn'}`;
            if (c.deadline) status += ` · turn ${c.turn} ${until(c.deadline)}`;
          } catch {
            // The clock is a detail; the list stands without it.
          }
        }
        return gameCard(g, h('span', { class: mine ? 'badge' : 'muted' }, ` ${status}`));
      }),
    );
    fill(list, rows.length ? rows : h('li', { class: 'muted' }, 'No games yet. Join one from the lobby.'));
  }
  await busy(null, err, load);
  for (const kind of ['game.turn_resolved', 'game.your_move', 'game.turn_opened', 'lobby.game_started', 'game.finished']) {
    scope.add(ctx.live.on(kind, () => load().catch(() => {})));
  }
  scope.add(ctx.live.onResync(() => load().catch(() => {})));
}

/** An input for one property of a JSON Schema. */
function schemaInput(name, prop) {
  if (prop.enum) {
    return h('select', { name }, prop.enum.map((v) => h('option', { value: v, selected: v === prop.default }, v)));
  }
  if (prop.type === 'integer' || prop.type === 'number') {
    return h('input', { name, type: 'number', inputmode: 'numeric', min: prop.minimum, max: prop.maximum, step: prop.type === 'integer' ? 1 : 'any', value: prop.default ?? '' });
  }
  if (prop.type === 'boolean') return h('input', { name, type: 'checkbox', checked: !!prop.default });
  return h('input', { name, value: prop.default ?? '' });
}

function readSchemaInput(input, prop) {
  if (prop.type === 'boolean') return input.checked;
  if (input.value === '') return undefined;
  if (prop.type === 'integer') return Number.parseInt(input.value, 10);
  if (prop.type === 'number') return Number(input.value);
  return input.value;
}

/** "30s", "2h", "1d 12h" → milliseconds, or NaN. */
export function durationMs(text) {
  const re = /(\d+)\s*(ms|s|m|min|h|d)\b/g;
  const unit = { ms: 1, s: 1e3, m: 6e4, min: 6e4, h: 36e5, d: 864e5 };
  let total = 0;
  let seen = '';
  for (const m of text.matchAll(re)) {
    total += Number(m[1]) * unit[m[2]];
    seen += m[0];
  }
  return seen.replace(/\s/g, '') === text.replace(/\s/g, '') && seen ? total : NaN;
}

function cronField(text, lo, hi) {
  const out = new Set();
  for (const part of text.split(',')) {
    const [range, stepText] = part.split('/');
    const step = stepText ? Number(stepText) : 1;
    let [a, b] = range === '*' ? [lo, hi] : range.split('-').map(Number);
    if (b === undefined) b = stepText ? hi : a;
    if (![a, b, step].every(Number.isInteger) || a < lo || b > hi || step < 1) return null;
    for (let v = a; v <= b; v += step) out.add(v);
  }
  return out;
}

/** Offset (ms) of `zone` from UTC at instant `t`. */
function zoneOffset(t, zone) {
  const parts = Object.fromEntries(
    new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' })
      .formatToParts(new Date(t))
      .map((p) => [p.type, p.value]),
  );
  const wall = Date.UTC(parts.year, parts.month - 1, parts.day, parts.hour % 24, parts.minute, parts.second);
  return wall - Math.floor(t / 1000) * 1000;
}

/** The next `count` slots of a five-field cron line in `zone` after `from`. */
export function cronPreview(line, zone, from, count = 5) {
  const f = line.trim().split(/\s+/);
  if (f.length !== 5) return null;
  const [mins, hours, doms, months, dows] = [cronField(f[0], 0, 59), cronField(f[1], 0, 23), cronField(f[2], 1, 31), cronField(f[3], 1, 12), cronField(f[4], 0, 7)];
  if (!mins || !hours || !doms || !months || !dows) return null;
  if (dows.has(7)) dows.add(0);
  const out = [];
  const start = new Date(from.getTime() + zoneOffset(from.getTime(), zone));
  for (let day = 0; day < 800 && out.length < count; day++) {
    const d = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth(), start.getUTCDate() + day));
    const domAny = f[2] === '*';
    const dowAny = f[4] === '*';
    const domOk = doms.has(d.getUTCDate());
    const dowOk = dows.has(d.getUTCDay());
    const dayOk = domAny || dowAny ? domOk && dowOk : domOk || dowOk;
    if (!months.has(d.getUTCMonth() + 1) || !dayOk) continue;
    for (const hr of [...hours].sort((a, b) => a - b)) {
      for (const mi of [...mins].sort((a, b) => a - b)) {
        const wall = d.getTime() + hr * 36e5 + mi * 6e4;
        let t = wall - zoneOffset(wall, zone);
        t = wall - zoneOffset(t, zone);
        if (t > from.getTime() && out.length < count && !out.includes(t)) out.push(t);
      }
    }
  }
  return out.map((t) => new Date(t));
}

const STARS = ['Orion', 'Lyra', 'Draco', 'Vega', 'Cygnus', 'Altair', 'Rigel', 'Sirius', 'Deneb', 'Capella', 'Mira', 'Polaris', 'Antares', 'Spica', 'Castor'];

/**
 * Seats `count` bots. Race names are unique among running games, so a
 * name that is taken is followed by the next candidate.
 */
async function seatBots(game, count) {
  let candidate = Math.floor(Math.random() * STARS.length * 10);
  for (let seated = 0; seated < count; ) {
    const star = STARS[candidate % STARS.length];
    const mark = Math.floor(candidate / STARS.length) % 100;
    candidate += 1;
    try {
      await call('addBot', { params: { id: game }, body: { name: mark ? `${star} Bot ${mark}` : `${star} Bot` } });
      seated += 1;
    } catch (err) {
      if (!['race_name_taken', 'race_name_reserved'].includes(err.code) || candidate > 2000) throw err;
    }
  }
}

export async function newGamePage(scope, ctx) {
  const kinds = await engines();
  const err = errorBox();
  const engine = h('select', { name: 'engine', id: 'engine' }, kinds.map((k) => h('option', { value: k.name }, `${k.title} (${k.mode}, ${k.min_players}–${k.max_players} players)`)));
  const title = h('input', { name: 'title', id: 'title', maxlength: 80, required: true, value: `${ctx.session.me.display_name}'s game` });
  const deadline = h('input', { name: 'enrol_deadline', id: 'deadline', type: 'datetime-local' });
  const inDay = new Date(Date.now() + 864e5);
  deadline.value = new Date(inDay.getTime() - inDay.getTimezoneOffset() * 6e4).toISOString().slice(0, 16);
  const settingsBox = h('fieldset', { class: 'settings' });
  const scheduleKind = h('select', { name: 'kind', id: 'schedule-kind' });
  const every = h('input', { name: 'every', id: 'every', value: '24h' });
  const cron = h('input', { name: 'cron', id: 'cron', value: '0 18 * * *' });
  const zone = h('input', { name: 'time_zone', id: 'zone', value: localZone() });
  const limit = h('input', { name: 'limit', id: 'limit', value: '24h' });
  const bots = h('input', { name: 'bots', id: 'bots', type: 'number', min: 0, max: 15, value: 0, inputmode: 'numeric' });
  const visibility = h('select', { name: 'visibility' }, h('option', { value: 'public' }, 'Listed in the lobby'), h('option', { value: 'unlisted' }, 'Unlisted (invite code)'));
  const early = h('input', { type: 'checkbox', name: 'early_turns', id: 'early-turns', checked: true });
  const botDelay = h('input', { name: 'bot_delay', id: 'bot-delay', value: '2s' });
  const excused = h('input', { name: 'excused_misses', id: 'excused', type: 'number', min: 0, max: 100, value: 1, inputmode: 'numeric' });
  const takeover = h('input', { name: 'bot_takeover_after', id: 'takeover', type: 'number', min: 0, max: 100, value: 3, inputmode: 'numeric' });
  const remind = h('input', { name: 'remind_before', id: 'remind', placeholder: 'half the turn, at most 12h' });
  const rulesBox = h(
    'details',
    { class: 'rules' },
    h('summary', {}, 'Rules for absent players, bots and reminders'),
    h('label', { 'data-path': 'rules/early_turns' }, early, ' Resolve a turn as soon as everyone has sent orders'),
    field('Bot move delay (sequential games)', botDelay, { path: 'rules/bot_delay' }),
    field('Excused misses per seat', excused, { path: 'rules/excused_misses' }),
    field('A bot takes a seat over after this many misses in a row (0: never)', takeover, { path: 'rules/bot_takeover_after' }),
    field('Remind players this long before the deadline (0s: never)', remind, { path: 'rules/remind_before' }),
  );
  const preview = h('ol', { class: 'preview', id: 'preview', 'aria-live': 'polite' });
  const scheduleFields = h('div');
  let inputs = {};

  function kind() {
    return kinds.find((k) => k.name === engine.value);
  }
  function drawSettings() {
    const k = kind();
    const props = (k.settings_schema && k.settings_schema.properties) || {};
    inputs = {};
    fill(
      settingsBox,
      h('legend', {}, `${k.title} settings`),
      Object.entries(props).map(([name, prop]) => {
        inputs[name] = schemaInput(name, prop);
        return field(prop.description || name, inputs[name], { path: `settings/${name}` });
      }),
    );
    const sequential = k.mode === 'sequential';
    fill(scheduleKind, sequential ? h('option', { value: 'per_move' }, 'A clock per move') : [h('option', { value: 'interval' }, 'Every fixed interval'), h('option', { value: 'cron' }, 'At set times (cron)')]);
    bots.disabled = !k.bots;
    drawSchedule();
  }
  function drawSchedule() {
    const s = scheduleKind.value;
    fill(
      scheduleFields,
      s === 'interval' ? field('Turn every (e.g. 30s, 12h, 1d)', every, { path: 'schedule/every' }) : null,
      s === 'cron' ? [field('Cron line (minute hour day month weekday)', cron, { path: 'schedule/cron' }), field('Time zone', zone, { path: 'schedule/time_zone' })] : null,
      s === 'per_move' ? field('Time per move (e.g. 1h, 2d)', limit, { path: 'schedule/limit' }) : null,
    );
    drawPreview();
  }
  function drawPreview() {
    const s = scheduleKind.value;
    const start = deadline.value ? new Date(deadline.value) : new Date();
    let times = null;
    if (s === 'interval') {
      const ms = durationMs(every.value);
      if (ms > 0) times = [1, 2, 3, 4, 5].map((i) => new Date(start.getTime() + i * ms));
    } else if (s === 'cron') {
      try {
        times = cronPreview(cron.value, zone.value.trim() || 'UTC', start);
      } catch {
        times = null;
      }
    }
    if (s === 'per_move') {
      fill(preview, h('li', { class: 'muted' }, 'Each player has this long for each move; bots answer within seconds.'));
      return;
    }
    fill(
      preview,
      times && times.length
        ? times.map((t) => h('li', {}, t.toLocaleString(undefined, { dateStyle: 'full', timeStyle: 'short' })))
        : h('li', { class: 'muted' }, 'Not a schedule yet.'),
    );
  }
  engine.addEventListener('change', drawSettings);
  scheduleKind.addEventListener('change', drawSchedule);
  for (const i of [every, cron, zone, deadline]) i.addEventListener('input', drawPreview);

  const create = h('button', { type: 'submit', class: 'primary', id: 'create' }, 'Create the game');
  const form = h(
    'form',
    {
      class: 'card',
      id: 'new-game-form',
      onsubmit: (e) => {
        e.preventDefault();
        busy(create, err, async () => {
          const k = kind();
          const settings = {};
          for (const [name, prop] of Object.entries(k.settings_schema.properties || {})) {
            const v = readSchemaInput(inputs[name], prop);
            if (v !== undefined) settings[name] = v;
          }
          const s = scheduleKind.value;
          const schedule = s === 'interval' ? { kind: s, every: every.value.trim() } : s === 'cron' ? { kind: s, cron: cron.value.trim(), time_zone: zone.value.trim() } : { kind: s, limit: limit.value.trim() };
          if (!deadline.value) throw new Error('Choose when enrolment closes.');
          const rules = {
            early_turns: early.checked,
            bot_delay: botDelay.value.trim(),
            excused_misses: Number(excused.value || 0),
            bot_takeover_after: Number(takeover.value || 0),
          };
          if (remind.value.trim()) rules.remind_before = remind.value.trim();
          const game = await call('createGame', {
            body: { title: title.value.trim(), engine: k.name, settings, schedule, rules, enrol_deadline: new Date(deadline.value).toISOString(), visibility: visibility.value },
          });
          await seatBots(game.id, Number(bots.value || 0));
          location.hash = `#/games/${game.id}`;
        }, form);
      },
    },
    field('Game', engine, { path: 'engine' }),
    field('Title', title, { path: 'title' }),
    settingsBox,
    h('fieldset', {}, h('legend', {}, 'Turns'), field('Schedule', scheduleKind, { path: 'schedule' }), scheduleFields, h('p', {}, `First turns after enrolment closes, in your time zone (${localZone()}):`), preview),
    field('Enrolment closes', deadline, { path: 'enrol_deadline' }),
    rulesBox,
    field('Bot seats', bots, { hint: 'Bots fill seats now; each plays its own turns.' }),
    field('Visibility', visibility, { path: 'visibility' }),
    err,
    create,
  );
  page('Create a game', form);
  drawSettings();
}
