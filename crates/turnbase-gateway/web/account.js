// The account page: display name, keeping a guest account by adding an
// email address, the sessions signed in to it, signing out.

import { call } from './api.js';
import { h, page, field, errorBox, busy, when, fill, toast } from './ui.js';
import { signedOut, session } from './app.js';

export async function accountPage(scope) {
  const me = await call('me');
  session.me = me;
  const name = h('input', { name: 'display_name', value: me.display_name, maxlength: 32 });
  const nameError = errorBox();
  const nameButton = h('button', { type: 'submit' }, 'Save');
  const nameForm = h(
    'form',
    {
      class: 'card',
      onsubmit: (e) => {
        e.preventDefault();
        busy(nameButton, nameError, async () => {
          session.me = await call('rename', { body: { display_name: name.value.trim() } });
          toast('Display name saved.');
        }, nameForm);
      },
    },
    h('h2', {}, 'Profile'),
    h('p', {}, me.is_guest ? 'Guest account' : `Signed in as ${me.email}`),
    field('Display name', name),
    nameError,
    nameButton,
  );

  let upgrade = null;
  if (me.is_guest) {
    const email = h('input', { name: 'email', type: 'email', autocomplete: 'email' });
    const code = h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code' });
    const err = errorBox();
    const send = h('button', { type: 'button' }, 'Email me a code');
    const keep = h('button', { type: 'submit', class: 'primary' }, 'Keep my account');
    upgrade = h(
      'form',
      {
        class: 'card',
        id: 'upgrade-form',
        onsubmit: (e) => {
          e.preventDefault();
          busy(keep, err, async () => {
            session.me = await call('upgrade', { body: { email: email.value.trim(), code: code.value.trim() } });
            toast('Your account now signs in by email.');
            accountPage(scope);
          }, upgrade);
        },
      },
      h('h2', {}, 'Keep this account'),
      h('p', { class: 'muted' }, 'Add an email address to sign in from any device and get your turns by mail.'),
      field('Email address', email),
      h('p', {}, send),
      field('Code', code),
      err,
      keep,
    );
    send.addEventListener('click', () => busy(send, err, async () => {
      await call('emailStart', { body: { email: email.value.trim() } });
      toast(`A code is on its way to ${email.value.trim()}.`);
    }, upgrade));
  }

  const list = h('ul', { class: 'list', id: 'sessions' });
  const listError = errorBox();
  async function loadSessions() {
    const r = await call('sessions');
    fill(
      list,
      r.items.map((s) => {
        const revoke = h('button', { type: 'button', class: 'small' }, s.current ? 'Sign out' : 'Revoke');
        revoke.addEventListener('click', () => busy(revoke, listError, async () => {
          if (s.current) {
            await call('logout', { body: {} });
            signedOut('Signed out.');
            return;
          }
          await call('revokeSession', { params: { id: s.id } });
          await loadSessions();
        }));
        return h(
          'li',
          { dataset: { session: s.id } },
          h('span', {}, h('strong', {}, s.device_name), s.current ? ' (this device)' : '', h('br'), h('small', { class: 'muted' }, `signed in ${when(s.created_at)}, last seen ${when(s.last_seen_at)}${s.country ? `, ${s.country}` : ''}`)),
          revoke,
        );
      }),
    );
  }
  const others = h('button', { type: 'button' }, 'Sign out everywhere else');
  others.addEventListener('click', () => busy(others, listError, async () => {
    const r = await call('revokeOthers', { body: {} });
    toast(`${r.revoked} other session(s) signed out.`);
    await loadSessions();
  }));
  page('Account', h('div', { class: 'grid2' }, nameForm, upgrade), h('section', { class: 'card' }, h('h2', {}, 'Where you are signed in'), list, listError, others));
  await loadSessions();
}
