// The inbox (the unread badge it updates lives in app.js) and the
// preferences page: kinds × channels, quiet hours, time zone, digest,
// webhook.

import { call } from './api.js';
import { live } from './live.js';
import { h, page, field, errorBox, busy, when, fill, toast, localZone } from './ui.js';

import { setUnread } from './app.js';

const TEXT = {
  turn_resolved: (p) => p.summary || `Turn ${p.turn} resolved.`,
  your_move: (p) => `Your move${p.turn ? ` (turn ${p.turn})` : ''}.`,
  turn_opened: (p) => `Turn ${p.turn} is open.`,
  orders_due: () => 'Your orders are due soon.',
  game_finished: () => 'The game is over.',
  game_started: () => 'The game has started.',
  application_received: (p) => `${p.race_name || 'Someone'} applied to join.`,
  application_approved: () => 'Your application was approved.',
  application_rejected: (p) => `Your application was rejected${p.reason ? `: ${p.reason}` : '.'}`,
  new_device: (p) => `New sign-in${p.device_name ? ` from ${p.device_name}` : ''}.`,
  admin_notice: (p) => p.message || p.text || 'A notice from the operators.',
};

function describe(n) {
  const f = TEXT[n.kind];
  return f ? f(n.payload || {}) : n.kind.replaceAll('_', ' ');
}

export async function inboxPage(scope) {
  const list = h('ul', { class: 'list inbox', id: 'inbox' });
  const err = errorBox();
  const onlyUnread = h('input', { type: 'checkbox', name: 'unread', id: 'only-unread' });
  const readAll = h('button', { type: 'button', id: 'read-all' }, 'Mark all read');
  const more = h('button', { type: 'button', hidden: true }, 'Older');
  let before = null;
  async function load(append = false) {
    const r = await call('notifications', { query: { limit: 30, unread: onlyUnread.checked ? 'true' : undefined, before: append ? before : undefined } });
    before = r.next_before;
    more.hidden = !before;
    setUnread(r.unread);
    const items = r.notifications.map((n) => {
      const read = h('button', { type: 'button', class: 'small', hidden: !!n.read_at }, 'Mark read');
      const li = h(
        'li',
        { class: n.read_at ? 'read' : 'unread', dataset: { notification: n.id } },
        h('span', {}, h('strong', {}, n.title || 'Turnbase'), ' ', describe(n), h('br'), h('small', { class: 'muted' }, when(n.created_at)), n.game_id ? [' · ', h('a', { href: `#/games/${n.game_id}` }, 'Open the game')] : null),
        read,
      );
      read.addEventListener('click', () => busy(read, err, async () => {
        const r2 = await call('markRead', { params: { id: n.id }, body: {} });
        setUnread(r2.unread);
        li.className = 'read';
        read.hidden = true;
      }));
      return li;
    });
    if (append) list.append(...items);
    else fill(list, items.length ? items : h('li', { class: 'muted' }, 'Nothing here yet.'));
  }
  readAll.addEventListener('click', () => busy(readAll, err, async () => {
    const r = await call('markAllRead', { body: {} });
    setUnread(r.unread);
    await load();
  }));
  onlyUnread.addEventListener('change', () => busy(null, err, () => load()));
  more.addEventListener('click', () => busy(more, err, () => load(true)));
  page('Inbox', h('p', {}, h('label', {}, onlyUnread, ' Unread only'), ' ', readAll), err, list, more);
  await busy(null, err, () => load());
  scope.add(live.on('*', (p) => {
    if (p && p.notification_id) load().catch(() => {});
  }));
}

const CHANNELS = ['push', 'email', 'webhook'];

export async function preferencesPage() {
  const prefs = await call('preferences');
  const err = errorBox();
  const boxes = new Map();
  const kinds = Object.keys(prefs.channels).sort();
  const table = h(
    'table',
    { class: 'prefs', id: 'prefs' },
    h('caption', {}, 'How you hear of each kind of event'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Event'), CHANNELS.map((c) => h('th', { scope: 'col' }, c)))),
    h(
      'tbody',
      {},
      kinds.map((k) =>
        h(
          'tr',
          { 'data-path': `channels/${k}` },
          h('th', { scope: 'row' }, k.replaceAll('_', ' ')),
          CHANNELS.map((c) => {
            const box = h('input', { type: 'checkbox', checked: prefs.channels[k].includes(c), 'aria-label': `${k.replaceAll('_', ' ')} by ${c}` });
            boxes.set(`${k}/${c}`, box);
            return h('td', {}, box);
          }),
        ),
      ),
    ),
  );
  const zone = h('input', { name: 'time_zone', value: prefs.time_zone || localZone() });
  const quietOn = h('input', { type: 'checkbox', name: 'quiet', checked: !!prefs.quiet_hours });
  const start = h('input', { name: 'start', type: 'time', value: prefs.quiet_hours ? prefs.quiet_hours.start : '22:00' });
  const end = h('input', { name: 'end', type: 'time', value: prefs.quiet_hours ? prefs.quiet_hours.end : '07:00' });
  const digest = h('input', { type: 'checkbox', name: 'digest', checked: !!prefs.digest });
  const webhook = h('input', { name: 'webhook_url', type: 'url', value: prefs.webhook ? prefs.webhook.url : '', placeholder: 'https://…' });
  const secret = h('p', { class: 'muted', id: 'webhook-secret' }, prefs.webhook ? ['Signing secret: ', h('code', {}, prefs.webhook.secret)] : null);
  const save = h('button', { type: 'submit', class: 'primary', id: 'prefs-save' }, 'Save');
  const form = h(
    'form',
    {
      id: 'prefs-form',
      onsubmit: (e) => {
        e.preventDefault();
        busy(save, err, async () => {
          const channels = {};
          for (const k of kinds) channels[k] = CHANNELS.filter((c) => boxes.get(`${k}/${c}`).checked);
          const r = await call('putPreferences', {
            body: {
              channels,
              time_zone: zone.value.trim(),
              quiet_hours: quietOn.checked ? { start: start.value, end: end.value } : null,
              digest: digest.checked,
              webhook_url: webhook.value.trim() || null,
            },
          });
          fill(secret, r.webhook ? ['Signing secret: ', h('code', {}, r.webhook.secret)] : null);
          toast('Preferences saved.');
        }, form);
      },
    },
    h('div', { class: 'scroll' }, table),
    h('fieldset', {}, h('legend', {}, 'Quiet hours'), h('label', {}, quietOn, ' No email or webhook during these hours (push still arrives)'), h('div', { class: 'grid2', 'data-path': 'quiet_hours' }, field('From', start), field('Until', end))),
    field('Time zone', zone, { path: 'time_zone' }),
    h('label', {}, digest, ' One email digest instead of one email each'),
    field('Webhook URL', webhook, { path: 'webhook_url' }),
    secret,
    err,
    save,
  );
  page('Alerts', form);
}
