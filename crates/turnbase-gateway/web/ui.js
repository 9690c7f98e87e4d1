// Small DOM helpers shared by every page: an element builder, errors shown
// in words next to what caused them, buttons that cannot send twice, and
// times in the reader's zone.

import { ApiError } from './api.js';

/**
 * Builds an element: h('button', {class: 'primary', onclick: f}, 'Send').
 * Attributes starting with `on` become listeners; `null`/`false` are left
 * out; children may be strings, nodes, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const WORDS = {
  offline: 'The server cannot be reached. Check your connection and try again.',
  rate_limited: 'Too many requests; wait a moment and try again.',
  unauthorized: 'Your session has ended; sign in again.',
};

/** An error as a sentence a person can act on. */
export function describe(err) {
  if (err instanceof ApiError) {
    let text = WORDS[err.code] || err.message;
    if (err.code === 'rate_limited' && err.retryAfter) text = `Too many requests; try again in ${err.retryAfter} s.`;
    return text;
  }
  return err && err.message ? err.message : String(err);
}

/**
 * Shows `err` in `box` (an element with role=alert), and each detail next
 * to the form field it names (`data-path` on the field's wrapper, matched
 * against the detail's JSON pointer or its last segment).
 */
export function showError(box, err, form) {
  if (form) for (const old of form.querySelectorAll('.field-error')) old.remove();
  if (!err) {
    if (box) fill(box);
    return;
  }
  const unplaced = [];
  for (const d of (err instanceof ApiError && err.details) || []) {
    const field = form && findField(form, d.path || '');
    if (field) field.append(h('span', { class: 'field-error', role: 'alert' }, d.reason));
    else unplaced.push(d);
  }
  if (box) {
    fill(
      box,
      h('p', {}, describe(err)),
      unplaced.length ? h('ul', {}, unplaced.map((d) => h('li', {}, d.path ? `${d.path}: ${d.reason}` : d.reason))) : null,
    );
  }
}

function findField(form, path) {
  const parts = path.split('/').filter(Boolean);
  // The whole pointer first, then shorter prefixes (an order's row for a
  // problem with one of its fields), then suffixes (a field by its name).
  const keys = [];
  for (let j = parts.length; j > 0; j--) keys.push(parts.slice(0, j).join('/'));
  for (let i = 1; i < parts.length; i++) keys.push(parts.slice(i).join('/'));
  for (const key of keys) {
    const found = form.querySelector(`[data-path="${CSS.escape(key)}"]`);
    if (found) return found;
  }
  return null;
}

/**
 * Runs `action` with `button` disabled (a second click while it runs does
 * nothing) and its error shown in `box`; resolves to the action's result,
 * or undefined after an error.
 */
export async function busy(button, box, action, form) {
  if (button && button.dataset.busy) return undefined;
  if (button) {
    button.dataset.busy = '1';
    button.disabled = true;
    button.setAttribute('aria-busy', 'true');
  }
  try {
    const result = await action();
    showError(box, null, form);
    return result;
  } catch (err) {
    showError(box, err, form);
    return undefined;
  } finally {
    if (button) {
      delete button.dataset.busy;
      button.disabled = false;
      button.removeAttribute('aria-busy');
    }
  }
}

/** A labelled field; `path` ties it to error details. */
export function field(label, input, { path, hint } = {}) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h(
    'div',
    { class: 'field', 'data-path': path || input.name || null },
    h('label', { for: id }, label),
    input,
    hint ? h('small', { class: 'hint' }, hint) : null,
  );
}

export function errorBox() {
  return h('div', { class: 'error', role: 'alert', 'aria-live': 'assertive' });
}

const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
export function localZone() {
  return zone || 'UTC';
}

export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** "in 4 min 10 s" / "2 min ago". */
export function until(iso, now = Date.now()) {
  if (!iso) return 'no deadline';
  let s = Math.round((new Date(iso).getTime() - now) / 1000);
  const past = s < 0;
  s = Math.abs(s);
  const parts = [];
  const d = Math.floor(s / 86400);
  const hr = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) parts.push(`${d} d`);
  if (hr) parts.push(`${hr} h`);
  if (m && !d) parts.push(`${m} min`);
  if (!d && !hr) parts.push(`${sec} s`);
  const text = parts.join(' ');
  return past ? `${text} ago` : `in ${text}`;
}

/** A short-lived message at the bottom of the page. */
export function toast(text) {
  let host = document.getElementById('toasts');
  if (!host) {
    host = h('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.append(host);
  }
  const item = h('div', { class: 'toast' }, text);
  host.append(item);
  while (host.children.length > 3) host.firstChild.remove();
  setTimeout(() => item.remove(), 5000);
}

/** A page title and the main region's content. */
export function page(title, ...children) {
  document.title = `${title} · Turnbase`;
  const main = document.getElementById('main');
  fill(main, h('h1', {}, title), ...children);
  return main;
}

/**
 * Timers and listeners that a page holds, released when it is left. A
 * page that finishes loading after it was left releases what it adds at
 * once, so nothing it registers outlives it.
 */
export class Scope {
  constructor() {
    this.cleanups = [];
    this.closed = false;
  }
  add(cleanup) {
    if (this.closed) cleanup();
    else this.cleanups.push(cleanup);
  }
  every(ms, fn) {
    const t = setInterval(fn, ms);
    this.add(() => clearInterval(t));
  }
  on(target, event, fn) {
    target.addEventListener(event, fn);
    this.add(() => target.removeEventListener(event, fn));
  }
  close() {
    this.closed = true;
    for (const c of this.cleanups.splice(0)) c();
  }
}
