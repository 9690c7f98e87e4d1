// The player's app: the shell (navigation, connection state, unread
// badge), the router over `#/…` addresses, and the session's lifetime.

import { call, setToken, token } from './api.js';
import { live } from './live.js';
import { h, fill, page, Scope, toast } from './ui.js';
import { signInPage } from './signin.js';
import { accountPage } from './account.js';
import { lobbyPage, newGamePage, myGames } from './lobby.js';
import { gamePage } from './game.js';
import { inboxPage, preferencesPage, unreadBadge } from './notifications.js';

export const session = { me: null };
let scope = new Scope();
let generation = 0;

const routes = [
  [/^#?\/?$/, () => lobbyPage],
  [/^#\/games\/new$/, () => newGamePage],
  [/^#\/games\/([\w-]+)$/, (m) => (s, ctx) => gamePage(s, ctx, m[1])],
  [/^#\/mine$/, () => myGames],
  [/^#\/inbox$/, () => inboxPage],
  [/^#\/settings$/, () => preferencesPage],
  [/^#\/account$/, () => accountPage],
];

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
    h('a', { href: '#/inbox', id: 'inbox-link' }, 'Inbox ', unreadBadge()),
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
    signInPage(scope, { onSignedIn });
    return;
  }
  const hash = location.hash || '#/';
  for (const [re, make] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        await make(m)(scope, ctx);
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
  render();
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
  render();
}

boot();
