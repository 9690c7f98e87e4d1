// The live event stream: one WebSocket per tab, opened with a one-use
// ticket, resumed from the last event id after sleep or a lost network,
// every envelope's Ed25519 signature checked against the gateway's
// published keys before anything in it is used.

import { call, token } from './api.js';

const LAST = 'turnbase.last-event';
const RETRY_MIN = 500;
const RETRY_MAX = 15000;

function b64url(text) {
  const s = text.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(s + '='.repeat((4 - (s.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** The gateway's signing keys by id, fetched again for an unknown id. */
class Keys {
  constructor() {
    this.keys = new Map();
    this.fetched = 0;
  }
  async get(kid) {
    if (!this.keys.has(kid) && Date.now() - this.fetched > 2000) {
      this.fetched = Date.now();
      const r = await fetch('/.well-known/turnbase-signing-keys', { cache: 'no-store' });
      const set = await r.json();
      for (const jwk of set.keys || []) {
        const key = await crypto.subtle.importKey(
          'jwk',
          { kty: jwk.kty, crv: jwk.crv, x: jwk.x },
          { name: 'Ed25519' },
          false,
          ['verify'],
        );
        this.keys.set(jwk.kid, key);
      }
    }
    return this.keys.get(kid);
  }
}

/**
 * States: `connecting`, `connected`, `reconnecting`, `resynced` (events
 * were lost; pages reload what they show), `offline` (signed out).
 * Listeners: `on(kind, fn)` for an event kind (`*` for all), `onState`,
 * `onResync`, `onRevoked`, `onBadSignature`.
 */
export class Live {
  constructor() {
    this.keys = new Keys();
    this.listeners = new Map();
    this.stateListeners = [];
    this.resyncListeners = [];
    this.revokedListeners = [];
    this.badListeners = [];
    this.state = 'offline';
    this.retry = RETRY_MIN;
    this.socket = null;
    this.timer = null;
    this.stopped = true;
    this.queue = Promise.resolve();
    window.addEventListener('online', () => this.kick());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') this.kick();
    });
  }

  on(kind, fn) {
    if (!this.listeners.has(kind)) this.listeners.set(kind, new Set());
    this.listeners.get(kind).add(fn);
    return () => this.listeners.get(kind).delete(fn);
  }
  onState(fn) {
    this.stateListeners.push(fn);
    fn(this.state);
  }
  onResync(fn) {
    this.resyncListeners.push(fn);
    return () => {
      this.resyncListeners = this.resyncListeners.filter((f) => f !== fn);
    };
  }
  onRevoked(fn) {
    this.revokedListeners.push(fn);
  }
  onBadSignature(fn) {
    this.badListeners.push(fn);
  }

  setState(state) {
    this.state = state;
    for (const fn of this.stateListeners) fn(state);
  }

  start() {
    this.stopped = false;
    if (!this.socket) this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.socket) this.socket.close(1000, 'signed out');
    this.socket = null;
    localStorage.removeItem(LAST);
    this.setState('offline');
  }

  /** Reconnects now if the stream is down (woken, back online). */
  kick() {
    if (this.stopped || (this.socket && this.socket.readyState <= 1)) return;
    clearTimeout(this.timer);
    this.retry = RETRY_MIN;
    this.connect();
  }

  async connect() {
    if (this.stopped || !token()) return;
    this.setState(this.state === 'offline' ? 'connecting' : 'reconnecting');
    let ticket;
    try {
      ticket = (await call('ticket', { body: {} })).ticket;
    } catch (err) {
      if (err.status === 401) return; // the app signs out
      this.later();
      return;
    }
    if (this.stopped) return;
    const url = new URL('/api/v1/events', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('ticket', ticket);
    const last = localStorage.getItem(LAST);
    if (last) url.searchParams.set('resume', last);
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      if (!performance.getEntriesByName('live-open').length) performance.mark('live-open');
      this.retry = RETRY_MIN;
      this.setState('connected');
    };
    socket.onmessage = (m) => {
      // In order: verification is asynchronous, delivery must not reorder.
      this.queue = this.queue.then(() => this.receive(m.data)).catch(() => {});
    };
    socket.onclose = (e) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (e.code === 4001) {
        this.stop();
        for (const fn of this.revokedListeners) fn();
        return;
      }
      this.later();
    };
  }

  later() {
    if (this.stopped) return;
    this.setState('reconnecting');
    // Exponential backoff with jitter, so that a restarted gateway is not
    // met by every client at once.
    const wait = this.retry * (0.5 + Math.random() / 2);
    this.retry = Math.min(this.retry * 2, RETRY_MAX);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }

  async receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === 'resync') {
      this.setState('resynced');
      for (const fn of this.resyncListeners) fn(frame.reason);
      return;
    }
    if (frame.type !== 'event') return;
    let ok = false;
    try {
      const key = await this.keys.get(frame.kid);
      ok = !!key && (await crypto.subtle.verify('Ed25519', key, b64url(frame.sig), new TextEncoder().encode(frame.envelope)));
    } catch {
      ok = false;
    }
    if (!ok) {
      for (const fn of this.badListeners) fn(frame);
      return;
    }
    const envelope = JSON.parse(frame.envelope);
    localStorage.setItem(LAST, frame.id);
    for (const kind of [envelope.kind, '*']) {
      for (const fn of this.listeners.get(kind) || []) {
        try {
          fn(envelope.payload, envelope);
        } catch (err) {
          console.error(err);
        }
      }
    }
  }
}

export const live = new Live();
