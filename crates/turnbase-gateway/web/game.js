// A game's page. Before the start: seats, applications (the owner decides
// them), applying with a race name checked as it is typed, starting early.
// Once running: the engine's board (conquest.js, reversi.js), the clock
// with who has submitted, the owner's controls, and the turn history with
// a replay slider; a resolved turn arrives live.

import { call, ApiError } from './api.js';
import { h, page, field, errorBox, busy, when, until, fill, toast } from './ui.js';
// Each engine's board is loaded with the first game of its kind.
const BOARDS = {
  conquest: () => import('./conquest.js'),
  reversi: () => import('./reversi.js'),
};

export async function gamePage(scope, ctx, id) {
  const detail = await call('game', { params: { id } });
  const g = detail.game;
  const me = ctx.session.me;
  const seat = (detail.seats || []).find((s) => s.account_id === me.id && s.status !== 'withdrawn');
  if (seat && ['running', 'paused', 'finished'].includes(g.state)) {
    await playPage(scope, ctx, detail, seat);
  } else {
    await lobbyDetail(scope, ctx, detail, seat);
  }
}

function seatList(detail, extra) {
  return h(
    'ul',
    { class: 'list', id: 'seats' },
    detail.seats.map((s) => h('li', { dataset: { seat: s.id } }, h('span', {}, s.race_name, s.is_bot ? ' (bot)' : '', s.status !== 'active' ? ` — ${s.status}` : ''), extra ? extra(s) : null)),
  );
}

async function lobbyDetail(scope, ctx, detail, seat) {
  const g = detail.game;
  const me = ctx.session.me;
  const owner = g.owner_id === me.id;
  const err = errorBox();
  // Drawn again from the top, so that this page's listeners are released.
  const reload = () => ctx.rerender();
  const parts = [
    h('p', { class: 'muted' }, `${g.engine} · ${g.state} · ${g.seats_taken}/${g.max_players} seats (at least ${g.min_players}) · enrolment closes ${when(g.enrol_deadline)}`),
    g.start_error ? h('p', { class: 'error' }, `The start failed: ${g.start_error}`) : null,
    g.invite_code && owner ? h('p', {}, 'Invite code: ', h('code', {}, g.invite_code)) : null,
    h('h2', {}, 'Seats'),
    seatList(detail),
  ];
  if (g.next_turns && g.next_turns.length) {
    parts.push(h('h2', {}, 'First turns if it starts at the deadline'), h('ol', { class: 'preview' }, g.next_turns.map((t) => h('li', {}, when(t.utc)))));
  }
  const mine = (detail.applications || []).find((a) => a.account_id === me.id && a.status === 'pending');
  if (g.state === 'enrolling' && !seat && !mine) parts.push(applyForm(g, reload));
  if (mine) {
    const withdraw = h('button', { type: 'button' }, 'Withdraw my application');
    withdraw.addEventListener('click', () => busy(withdraw, err, async () => {
      await call('withdraw', { params: { id: g.id }, body: {} });
      reload();
    }));
    parts.push(h('p', {}, `You applied as ${mine.race_name}; the owner decides. `, withdraw));
  }
  if (owner) {
    const pending = (detail.applications || []).filter((a) => a.status === 'pending');
    parts.push(
      h('h2', {}, 'Applications'),
      h(
        'ul',
        { class: 'list', id: 'applications' },
        pending.length
          ? pending.map((a) => {
              const approve = h('button', { type: 'button', class: 'small primary' }, `Approve ${a.race_name}`);
              const reject = h('button', { type: 'button', class: 'small' }, `Reject ${a.race_name}`);
              approve.addEventListener('click', () => busy(approve, err, async () => {
                await call('approve', { params: { id: g.id, application: a.id }, body: {} });
                reload();
              }));
              reject.addEventListener('click', () => busy(reject, err, async () => {
                await call('reject', { params: { id: g.id, application: a.id }, body: {} });
                reload();
              }));
              return h('li', { dataset: { application: a.id } }, h('span', {}, a.race_name, h('small', { class: 'muted' }, ` applied ${when(a.created_at)}`)), h('span', {}, approve, ' ', reject));
            })
          : h('li', { class: 'muted' }, 'No one is waiting.'),
      ),
    );
    if (g.state === 'enrolling') {
      const start = h('button', { type: 'button', class: 'primary', id: 'start' }, 'Start now');
      const cancel = h('button', { type: 'button', id: 'cancel' }, 'Cancel the game');
      start.addEventListener('click', () => busy(start, err, async () => {
        await call('start', { params: { id: g.id }, body: {} });
        toast('Starting: the engine is being set up.');
        reload();
      }));
      cancel.addEventListener('click', () => busy(cancel, err, async () => {
        if (!confirm('Cancel this game for everyone?')) return;
        await call('cancel', { params: { id: g.id }, body: {} });
        reload();
      }));
      parts.push(h('p', {}, start, ' ', cancel));
    }
  }
  if (seat && g.state === 'starting') parts.push(h('p', { class: 'muted', role: 'status' }, 'The game is starting…'));
  parts.push(err);
  page(g.title, ...parts);
  const refresh = (p) => {
    if (!p || p.game_id === g.id) reload().catch(() => {});
  };
  for (const kind of ['lobby.application_received', 'lobby.application_approved', 'lobby.application_rejected', 'lobby.game_state_changed', 'lobby.game_started', 'lobby.game_starting', 'game.turn_opened', 'game.your_move']) {
    scope.add(ctx.live.on(kind, refresh));
  }
}

function applyForm(g, reload) {
  const name = h('input', { name: 'race_name', id: 'race-name', maxlength: 24, autocomplete: 'off', required: true });
  const status = h('small', { class: 'hint', id: 'race-status', 'aria-live': 'polite' });
  const err = errorBox();
  const button = h('button', { type: 'submit', class: 'primary', id: 'apply' }, 'Apply');
  let timer = null;
  let asked = '';
  name.addEventListener('input', () => {
    clearTimeout(timer);
    const value = name.value.trim();
    if (value.length < 2) {
      status.textContent = '';
      return;
    }
    timer = setTimeout(async () => {
      asked = value;
      try {
        const a = await call('raceName', { params: { name: value } });
        if (asked !== value) return;
        status.textContent = a.status === 'available' ? `“${value}” is free.` : `“${value}” is ${a.status.replace('_', ' ')}${a.reason ? `: ${a.reason}` : ''}.`;
        status.dataset.status = a.status;
      } catch (e) {
        if (asked === value) status.textContent = e.message;
      }
    }, 250);
  });
  const form = h(
    'form',
    {
      class: 'card',
      id: 'apply-form',
      onsubmit: (e) => {
        e.preventDefault();
        busy(button, err, async () => {
          await call('apply', { params: { id: g.id }, body: { race_name: name.value.trim() } });
          toast('Applied; the owner decides.');
          reload();
        }, form);
      },
    },
    h('h2', {}, 'Join'),
    field('Race name', name, { path: 'race_name' }),
    status,
    err,
    button,
  );
  return form;
}

/** Names of seats (the engine's player ids) for the board and standings. */
function names(detail) {
  const m = new Map();
  for (const s of detail.seats) m.set(s.id, s.race_name);
  return m;
}

async function playPage(scope, ctx, detail, seat) {
  const g = detail.game;
  const owner = g.owner_id === ctx.session.me.id;
  const Board = BOARDS[g.engine] ? await BOARDS[g.engine]() : null;
  const err = errorBox();
  const boardHost = h('section', { class: 'board', id: 'board', 'aria-label': 'Board' });
  const clockBox = h('div', { class: 'clock', id: 'clock', role: 'status', 'aria-live': 'polite' });
  const standings = h('ol', { class: 'standings', id: 'standings' });
  const historyList = h('ol', { class: 'history', id: 'history', reversed: true });
  const slider = h('input', { type: 'range', id: 'replay', min: 1, max: 1, value: 1, 'aria-label': 'Replay turn', disabled: true });
  const replayLabel = h('span', { id: 'replay-label' }, 'Live');
  const live = h('button', { type: 'button', class: 'small', id: 'replay-live', hidden: true }, 'Back to now');
  const seatNames = names(detail);
  let clock = null;
  let turns = [];
  let replaying = false;

  const board = Board
    ? Board.mount(boardHost, { game: g, seat, names: seatNames, sendOrders, scope })
    : { update: (v) => fill(boardHost, h('pre', {}, JSON.stringify(v.view, null, 2))), replay: () => {} };

  async function sendOrders(orders, turn) {
    const r = await call('orders', { params: { id: g.id }, body: { turn, orders } });
    return r;
  }

  function drawClock() {
    if (!clock) return;
    const submitted = new Set(clock.submitted);
    fill(
      clockBox,
      h('p', {}, h('strong', {}, `Turn ${clock.turn}`), ' · ', g.state === 'finished' || clock.state === 'finished' ? 'finished' : clock.paused ? 'paused' : clock.deadline ? `resolves ${until(clock.deadline)}` : 'no deadline'),
      clock.to_move.length
        ? h(
            'ul',
            { class: 'to-move' },
            clock.to_move.map((s) => h('li', { dataset: { seat: s.seat_id } }, submitted.has(s.seat_id) || s.bot ? '✓ ' : '… ', s.race_name, s.bot ? ' (bot)' : '', submitted.has(s.seat_id) ? ' — orders in' : '')),
          )
        : null,
    );
  }

  function drawStandings(list) {
    fill(standings, (list || []).map((s) => h('li', {}, `${seatNames.get(s.player_id) || s.player_id}: ${s.score}${s.status && s.status !== 'playing' ? ` (${s.status})` : ''}`)));
  }

  async function loadTurns() {
    const r = await call('turns', { params: { id: g.id }, query: { limit: 100 } });
    turns = r.turns.slice().sort((a, b) => a.turn - b.turn);
    fill(historyList, turns.slice().reverse().map((t) => h('li', { value: t.turn }, h('strong', {}, `Turn ${t.turn}`), ` ${t.summary || ''} `, h('small', { class: 'muted' }, `${t.trigger}, ${when(t.resolved_at)}`))));
    slider.max = String(Math.max(1, turns.length));
    slider.disabled = turns.length === 0;
    if (!replaying) slider.value = slider.max;
    const last = turns[turns.length - 1];
    if (last) drawStandings(last.standings);
  }

  // Answers can overtake each other (two events in a row); only the
  // newest load draws, so an older view never replaces a newer one.
  let loads = 0;
  async function loadNow() {
    const mine = ++loads;
    const cl = await call('clock', { params: { id: g.id } });
    let view;
    try {
      view = await call('view', { params: { id: g.id } });
    } catch (e) {
      // A finished game's engine is stopped in time: its last turn's view,
      // as recorded, stands in for it.
      if (cl.state !== 'finished' || !cl.turn) throw e;
      const last = await call('turn', { params: { id: g.id, n: cl.turn } });
      view = { turn: last.turn, state: 'finished', to_move: false, view: last.view };
    }
    if ((view.state === 'finished' || cl.state === 'finished') && g.state !== 'finished') {
      // Over now: drawn again as a finished game (no orders, no controls).
      ctx.rerender();
      return;
    }
    let options = null;
    if (view.to_move && view.state === 'running') {
      try {
        options = await call('options', { params: { id: g.id } });
      } catch (e) {
        if (!(e instanceof ApiError)) throw e;
      }
    }
    if (mine !== loads) return;
    clock = cl;
    if (!replaying) board.update(view, options, clock);
    drawClock();
  }

  async function replay(index) {
    const t = turns[index];
    if (!t) return;
    replaying = true;
    live.hidden = false;
    replayLabel.textContent = `After turn ${t.turn}`;
    const full = t.view ? t : await call('turn', { params: { id: g.id, n: t.turn } });
    board.replay(full.view, full);
    drawStandings(full.standings);
  }
  slider.addEventListener('input', () => replay(Number(slider.value) - 1).catch((e) => toast(e.message)));
  live.addEventListener('click', () => {
    replaying = false;
    live.hidden = true;
    replayLabel.textContent = 'Live';
    slider.value = slider.max;
    loadNow().catch((e) => toast(e.message));
    loadTurns().catch(() => {});
  });

  const controls = [];
  if (owner && g.state !== 'finished') {
    const force = h('button', { type: 'button', class: 'small', id: 'force' }, 'Resolve the turn now');
    const pause = h('button', { type: 'button', class: 'small', id: 'pause' }, clock && clock.paused ? 'Resume' : 'Pause');
    const extendBy = h('input', { name: 'by', value: '1h', size: 5, 'aria-label': 'Extend by' });
    const extend = h('button', { type: 'button', class: 'small', id: 'extend' }, 'Extend');
    force.addEventListener('click', () => busy(force, err, async () => {
      clock = await call('forceTurn', { params: { id: g.id }, body: {} });
      drawClock();
    }));
    pause.addEventListener('click', () => busy(pause, err, async () => {
      await call(clock && clock.paused ? 'resume' : 'pause', { params: { id: g.id }, body: {} });
      clock = await call('clock', { params: { id: g.id } });
      pause.textContent = clock.paused ? 'Resume' : 'Pause';
      drawClock();
    }));
    extend.addEventListener('click', () => busy(extend, err, async () => {
      clock = await call('extend', { params: { id: g.id }, body: { by: extendBy.value.trim() } });
      drawClock();
    }));
    controls.push(h('details', { class: 'owner' }, h('summary', {}, 'Owner controls'), h('p', {}, force, ' ', pause), h('p', {}, extendBy, ' ', extend)));
  }
  const resign = h('button', { type: 'button', class: 'small', id: 'resign' }, 'Resign');
  resign.addEventListener('click', () => busy(resign, err, async () => {
    if (!confirm('Resign from this game? Your seat stays, marked resigned.')) return;
    await call('resign', { params: { id: g.id }, body: {} });
    ctx.rerender();
  }));

  page(
    g.title,
    h('p', { class: 'muted' }, `${g.engine} · you play ${seat.race_name}${seat.status !== 'active' ? ` (${seat.status})` : ''} · ${g.state}`),
    err,
    h(
      'div',
      { class: 'play' },
      boardHost,
      h(
        'aside',
        {},
        clockBox,
        h('div', { class: 'replay' }, h('label', { for: 'replay' }, 'History '), slider, ' ', replayLabel, ' ', live),
        h('h2', {}, 'Standings'),
        standings,
        controls,
        g.state !== 'finished' && seat.status === 'active' ? h('p', {}, resign) : null,
        h('h2', {}, 'Turns'),
        historyList,
      ),
    ),
  );
  // The board first; the history (standings, replay) right after.
  await loadNow();
  loadTurns().catch((e) => toast(e.message));
  scope.every(1000, drawClock);

  const mine = (p) => p && p.game_id === g.id;
  const onTurn = (p, envelope) => {
    if (!mine(p)) return;
    if (p.summary) toast(p.summary);
    loadNow().catch(() => {});
    loadTurns().catch(() => {});
  };
  for (const kind of ['game.turn_resolved', 'game.your_move', 'game.turn_opened', 'game.turn_extended', 'game.finished', 'lobby.game_state_changed', 'game.eliminated']) {
    scope.add(ctx.live.on(kind, onTurn));
  }
  scope.add(ctx.live.onResync(() => onTurn({ game_id: g.id })));
  // Another seat's orders change only the clock; look now and then.
  scope.every(10000, () => {
    if (!replaying && g.state !== 'finished') call('clock', { params: { id: g.id } }).then((c) => {
      clock = c;
      drawClock();
    }).catch(() => {});
  });
}
