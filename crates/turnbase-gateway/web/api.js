// The REST API, as one table of routes and one way to call them. The
// table is checked against /api/v1/openapi.json by the gateway's tests, so
// a route renamed in the backend fails there, not in a player's browser.

/** name → [method, path template]; `{x}` is filled from `params`. */
export const ROUTES = {
  info: ['GET', '/api/v1/public/info'],
  engines: ['GET', '/api/v1/public/engines'],
  openGames: ['GET', '/api/v1/user/games'],
  raceName: ['GET', '/api/v1/public/race-names/{name}/availability'],
  guest: ['POST', '/api/v1/public/auth/guest'],
  emailStart: ['POST', '/api/v1/public/auth/email/start'],
  emailVerify: ['POST', '/api/v1/public/auth/email/verify'],
  me: ['GET', '/api/v1/user/me'],
  rename: ['PATCH', '/api/v1/user/me'],
  upgrade: ['POST', '/api/v1/user/me/upgrade'],
  myGames: ['GET', '/api/v1/user/me/games'],
  logout: ['POST', '/api/v1/user/logout'],
  sessions: ['GET', '/api/v1/user/sessions'],
  revokeSession: ['DELETE', '/api/v1/user/sessions/{id}'],
  revokeOthers: ['POST', '/api/v1/user/sessions/revoke-others'],
  createGame: ['POST', '/api/v1/user/games'],
  game: ['GET', '/api/v1/user/games/{id}'],
  applications: ['GET', '/api/v1/user/games/{id}/applications'],
  apply: ['POST', '/api/v1/user/games/{id}/applications'],
  approve: ['POST', '/api/v1/user/games/{id}/applications/{application}/approve'],
  reject: ['POST', '/api/v1/user/games/{id}/applications/{application}/reject'],
  withdraw: ['POST', '/api/v1/user/games/{id}/withdraw'],
  addBot: ['POST', '/api/v1/user/games/{id}/bots'],
  start: ['POST', '/api/v1/user/games/{id}/start'],
  cancel: ['POST', '/api/v1/user/games/{id}/cancel'],
  resign: ['POST', '/api/v1/user/games/{id}/resign'],
  view: ['GET', '/api/v1/user/games/{id}/view'],
  options: ['GET', '/api/v1/user/games/{id}/options'],
  orders: ['PUT', '/api/v1/user/games/{id}/orders'],
  clock: ['GET', '/api/v1/user/games/{id}/clock'],
  turns: ['GET', '/api/v1/user/games/{id}/turns'],
  turn: ['GET', '/api/v1/user/games/{id}/turns/{n}'],
  forceTurn: ['POST', '/api/v1/user/games/{id}/force-turn'],
  pause: ['POST', '/api/v1/user/games/{id}/pause'],
  resume: ['POST', '/api/v1/user/games/{id}/resume'],
  extend: ['POST', '/api/v1/user/games/{id}/extend'],
  notifications: ['GET', '/api/v1/user/notifications'],
  unreadCount: ['GET', '/api/v1/user/notifications/unread-count'],
  markRead: ['POST', '/api/v1/user/notifications/{id}/read'],
  markAllRead: ['POST', '/api/v1/user/notifications/read-all'],
  preferences: ['GET', '/api/v1/user/notification-preferences'],
  putPreferences: ['PUT', '/api/v1/user/notification-preferences'],
  adminAccounts: ['GET', '/api/v1/admin/accounts'],
  adminBlock: ['POST', '/api/v1/admin/accounts/{id}/block'],
  adminUnblock: ['POST', '/api/v1/admin/accounts/{id}/unblock'],
  adminGames: ['GET', '/api/v1/admin/games'],
  adminForce: ['POST', '/api/v1/admin/games/{id}/force-turn'],
  adminPause: ['POST', '/api/v1/admin/games/{id}/pause'],
  adminResume: ['POST', '/api/v1/admin/games/{id}/resume'],
  adminExtend: ['POST', '/api/v1/admin/games/{id}/extend'],
  adminCancel: ['POST', '/api/v1/admin/games/{id}/cancel'],
  adminTurns: ['GET', '/api/v1/admin/games/{id}/turns'],
  adminRuntime: ['GET', '/api/v1/admin/runtime'],
  adminRestart: ['POST', '/api/v1/admin/runtime/{game}/restart'],
  adminRetryStart: ['POST', '/api/v1/admin/games/{id}/retry-start'],
  adminMail: ['GET', '/api/v1/admin/mail'],
  adminMailRetry: ['POST', '/api/v1/admin/mail/{id}/retry'],
  adminDeadLetters: ['GET', '/api/v1/admin/notifications/dead-letters'],
  adminRequeue: ['POST', '/api/v1/admin/notifications/dead-letters/{id}/requeue'],
  adminAudit: ['GET', '/api/v1/admin/audit'],
  adminMetrics: ['GET', '/api/v1/admin/metrics'],
};

/**
 * The fields each request body may carry (required ones first, up to the
 * `|`). Held to the OpenAPI request schemas by the same test as ROUTES;
 * `call` refuses a field that is not listed, so a body that drifted from
 * the API fails loudly in development instead of being half-understood.
 * Routes not listed here take no body.
 */
export const BODIES = {
  guest: 'display_name | device_name',
  emailStart: 'email |',
  emailVerify: 'email code | device_name',
  rename: 'display_name |',
  upgrade: 'email code |',
  createGame: 'title engine enrol_deadline schedule | settings rules min_players max_players visibility',
  apply: 'race_name | invite_code',
  reject: '| reason',
  addBot: 'name |',
  orders: 'turn orders |',
  extend: 'by |',
  putPreferences: 'channels quiet_hours | time_zone digest webhook_url',
  adminBlock: 'reason |',
  adminForce: 'reason |',
  adminPause: 'reason |',
  adminResume: 'reason |',
  adminExtend: 'by reason |',
  adminCancel: 'reason |',
};

/** Routes the gateway answers itself (not in the backend's OpenAPI). */
export const EDGE_ROUTES = {
  ticket: ['POST', '/api/v1/user/events/ticket'],
};
Object.assign(ROUTES, EDGE_ROUTES);

const TOKEN = 'turnbase.token';

export function token() {
  return localStorage.getItem(TOKEN);
}

export function setToken(value) {
  if (value) localStorage.setItem(TOKEN, value);
  else localStorage.removeItem(TOKEN);
}

/** An answer other than 2xx, with the API's error body taken apart. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const e = (body && body.error) || {};
    super(e.message || (status === 0 ? 'The server cannot be reached.' : `The server answered ${status}.`));
    this.status = status;
    this.code = e.code || (status === 0 ? 'offline' : 'error');
    this.details = Array.isArray(e.details) ? e.details : [];
    this.retryAfter = retryAfter;
  }
}

/** Fills a path template; every parameter is URL-encoded. */
export function path(name, params = {}) {
  const route = ROUTES[name];
  if (!route) throw new Error(`no route ${name}`);
  return route[1].replace(/\{(\w+)\}/g, (_, key) => {
    if (params[key] === undefined) throw new Error(`route ${name} needs ${key}`);
    return encodeURIComponent(params[key]);
  });
}

function checkBody(name, body) {
  const spec = BODIES[name];
  if (spec === undefined) {
    if (Object.keys(body).length) throw new Error(`bug: ${name} takes no body`);
    return undefined;
  }
  const [required, optional] = spec.split('|').map((part) => part.trim().split(/\s+/).filter(Boolean));
  for (const key of Object.keys(body)) {
    if (!required.includes(key) && !optional.includes(key)) throw new Error(`bug: ${name} has no field ${key}`);
  }
  for (const key of required) {
    if (!(key in body)) throw new Error(`bug: ${name} needs ${key}`);
  }
  return body;
}

/**
 * Calls a route. Resolves to the parsed JSON (or null for an empty
 * answer); rejects with an ApiError. A 401 on a user or admin route means
 * the session is gone: listeners of `turnbase:signed-out` hear it.
 */
export async function call(name, { params, query, body } = {}) {
  const [method] = ROUTES[name];
  let url = path(name, params);
  if (query) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null && v !== '') q.set(k, v);
    }
    const text = q.toString();
    if (text) url += `?${text}`;
  }
  if (body !== undefined) body = checkBody(name, body);
  const headers = { accept: 'application/json' };
  const t = token();
  if (t) headers.authorization = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  if (response.ok && !(response.headers.get('content-type') || '').includes('json')) {
    data = text;
  } else if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    if (response.status === 401 && !url.startsWith('/api/v1/public/')) {
      window.dispatchEvent(new CustomEvent('turnbase:signed-out'));
    }
    throw new ApiError(response.status, data, response.headers.get('retry-after'));
  }
  return data;
}
