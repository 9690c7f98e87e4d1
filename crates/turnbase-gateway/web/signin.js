// Signing in: as a guest with a display name (one click), or by a code
// mailed to an address.

import { call } from './api.js';
import { h, page, field, errorBox, busy } from './ui.js';

/** A short name for this browser, shown in the session list. */
export function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? 'Firefox' : /Edg\//.test(ua) ? 'Edge' : /Chrom/.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : 'Browser';
  const os = /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS/.test(ua) ? 'macOS' : /Windows/.test(ua) ? 'Windows' : /Linux/.test(ua) ? 'Linux' : 'a device';
  return `${browser} on ${os}`;
}

export function signInPage(scope, { onSignedIn }) {
  const guestName = h('input', { name: 'display_name', autocomplete: 'nickname', maxlength: 32, required: true });
  const guestError = errorBox();
  const guestButton = h('button', { type: 'submit', class: 'primary', id: 'guest-go' }, 'Play as a guest');
  const guestForm = h(
    'form',
    {
      class: 'card',
      id: 'guest-form',
      onsubmit: (e) => {
        e.preventDefault();
        busy(guestButton, guestError, async () => {
          const r = await call('guest', { body: { display_name: guestName.value.trim(), device_name: deviceName() } });
          onSignedIn(r);
        }, guestForm);
      },
    },
    h('h2', {}, 'Play now'),
    h('p', { class: 'muted' }, 'A guest account keeps your games on this device. Add an email address later to keep it everywhere.'),
    field('Display name', guestName),
    guestError,
    guestButton,
  );

  const email = h('input', { name: 'email', type: 'email', autocomplete: 'email', required: true });
  const code = h('input', { name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code' });
  const emailError = errorBox();
  const sendButton = h('button', { type: 'submit', class: 'primary', id: 'email-send' }, 'Email me a code');
  const verifyButton = h('button', { type: 'submit', class: 'primary', id: 'email-verify' }, 'Sign in');
  const codeStep = h('div', { hidden: true, id: 'code-step' }, h('p', { class: 'muted', id: 'code-sent' }), field('Code', code), verifyButton);
  const emailForm = h(
    'form',
    {
      class: 'card',
      id: 'email-form',
      onsubmit: (e) => {
        e.preventDefault();
        if (codeStep.hidden) {
          busy(sendButton, emailError, async () => {
            await call('emailStart', { body: { email: email.value.trim() } });
            codeStep.hidden = false;
            code.required = true;
            sendButton.hidden = true;
            codeStep.querySelector('#code-sent').textContent = `A code is on its way to ${email.value.trim()}. It works for a few minutes.`;
            code.focus();
          }, emailForm);
        } else {
          busy(verifyButton, emailError, async () => {
            const r = await call('emailVerify', { body: { email: email.value.trim(), code: code.value.trim(), device_name: deviceName() } });
            onSignedIn(r);
          }, emailForm);
        }
      },
    },
    h('h2', {}, 'Sign in by email'),
    field('Email address', email),
    sendButton,
    codeStep,
    emailError,
  );
  page('Welcome to Turnbase', h('p', {}, 'Turn-based games that last days: send your orders, and hear when the turn resolves.'), h('div', { class: 'grid2' }, guestForm, emailForm));
  guestName.focus();
}
