// The player's app: the shell (navigation, connection state, unread
// badge), the router over `#/…` addresses, and the session's lifetime.

import { call, setToken, token } from './api.js';
import { live } from './live.js';
import { h, fill, page, Scope, toast } from './ui.js';

// Pages are loaded when first visited, so that a cold load of one page
// fetches only the modules it uses.
const pages = {
  signin: () => import('./signin.js').then((m) => m.signInPage),
  account: () => import('./account.js').then((m) => m.accountPage),
  lobby: () => import('./lobby.js').then((m) => m.lobbyPage),
  newGame: () => import('./lobby.js').then((m) => m.newGamePage),
  mine: () => import('./lobby.js').then((m) => m.myGames),
  game: () => import('./game.js').then((m) => m.gamePage),
  inbox: () => import('./notifications.js').then((m) => m.inboxPage),
  settings: () => import('./notifications.js').then((m) => m.preferencesPage),
};

export const session = { me: null };
let scope = new Scope();
let generation = 0;

const routes = [
  [/^#?\/?$/, async () => pages.lobby()],
  [/^#\/games\/new$/, async () => pages.newGame()],
  [/^#\/games\/([\w-]+)$/, async (m) => {
    const gamePage = await pages.game();
    return (s, ctx) => gamePage(s, ctx, m[1]);
  }],
  [/^#\/mine$/, async () => pages.mine()],
  [/^#\/inbox$/, async () => pages.inbox()],
  [/^#\/settings$/, async () => pages.settings()],
  [/^#\/account$/, async () => pages.account()],
];

/** The unread count in the navigation: counted once, then kept live. */
const badge = h('span', { class: 'badge', id: 'unread', hidden: true, 'aria-label': '0 unread' });
let unread = 0;
export function setUnread(n) {
  unread = Math.max(0, n);
  badge.textContent = String(unread);
  badge.hidden = unread === 0;
  badge.setAttribute('aria-label', `${unread} unread`);
}
function countUnread() {
  call('unreadCount').then((r) => setUnread(r.unread)).catch(() => {});
}
live.on('*', (payload, envelope) => {
  if (envelope.kind === 'notifications.unread') setUnread(payload.unread);
  else if (payload && payload.notification_id) setUnread(unread + 1);
});
live.onResync(countUnread);

function nav() {
  const me = session.me;
  const el = document.getElementById('nav');
  if (!me) {
    fill(el);
    return;
  }
  fill(
    el,
    h('a', { href: '#/' }, 'Lobby'),
    h('a', { href: '#/mine' }, 'My games'),
    h('a', { href: '#/inbox', id: 'inbox-link' }, 'Inbox ', badge),
    h('a', { href: '#/settings' }, 'Alerts'),
    h('a', { href: '#/account', title: 'Your account and sessions' }, me.display_name),
    me.role === 'admin' ? h('a', { href: '/admin/' }, 'Admin') : null,
  );
}

async function render() {
  scope.close();
  scope = new Scope();
  const mine = ++generation;
  const ctx = { session, live, scope, rerender: render };
  if (!session.me) {
    const signInPage = await pages.signin();
    if (mine === generation) signInPage(scope, { onSignedIn });
    return;
  }
  const hash = location.hash || '#/';
  for (const [re, make] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        const show = await make(m);
        if (mine !== generation) return;
        await show(scope, ctx);
      } catch (err) {
        // A page left before it failed says nothing over its successor.
        if (mine === generation) page('Something went wrong', h('p', { class: 'error', role: 'alert' }, err.message || String(err)));
      }
      if (mine === generation) document.getElementById('main').focus({ preventScroll: true });
      return;
    }
  }
  page('Not found', h('p', {}, 'There is no page here. '), h('a', { href: '#/' }, 'Back to the lobby'));
}

async function onSignedIn(signedIn) {
  setToken(signedIn.token);
  session.me = signedIn.account;
  nav();
  live.start();
  await render();
  countUnread();
}

/** Drops the session here (the server's is gone or was signed out). */
export function signedOut(message) {
  if (!session.me && !token()) return;
  setToken(null);
  session.me = null;
  live.stop();
  nav();
  render();
  if (message) toast(message);
}

function connectionState(state) {
  const el = document.getElementById('conn');
  const words = {
    connecting: 'Connecting…',
    connected: 'Live',
    reconnecting: 'Reconnecting…',
    resynced: 'Resynced',
    offline: '',
  };
  el.textContent = words[state] ?? state;
  el.dataset.state = state;
  if (state === 'resynced') setTimeout(() => live.state === 'resynced' && live.setState('connected'), 3000);
}

async function boot() {
  window.addEventListener('turnbase:signed-out', () => signedOut('Your session has ended. Sign in again.'));
  window.addEventListener('hashchange', render);
  live.onState(connectionState);
  live.onRevoked(() => signedOut('This session was signed out from another device.'));
  live.onBadSignature(() => {
    const w = document.getElementById('warning');
    w.hidden = false;
    w.textContent = 'Warning: an event arrived with a signature that does not verify, and was ignored. Someone may be tampering with your connection.';
  });
  if (token()) {
    try {
      session.me = await call('me');
      live.start();
    } catch (err) {
      if (err.status === 401) setToken(null);
      else if (err.status === 0) toast('The server cannot be reached; retrying when you reload.');
    }
  }
  nav();
  await render();
  // After the first page: its own requests go first.
  if (session.me) countUnread();
}

boot();
