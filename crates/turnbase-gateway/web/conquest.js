// The Conquest board: the map as SVG (planets with owner, ships and
// production, fleets in flight with their arrival turn, enemy fleets bound
// for my planets, everything else in the fog), and orders made by picking
// a source planet, then a target, then a count. Orders are kept in this
// browser until the server has them, so a lost connection loses nothing.

import { ApiError } from './api.js';
import { h, fill, busy, errorBox, field } from './ui.js';

const PALETTE = ['#2d6cdf', '#d1495b', '#edae49', '#00798c', '#66a182', '#8d5a97', '#e07a5f', '#3d405b', '#81b29a', '#f2cc8f', '#5f0f40', '#0f4c5c', '#9a031e', '#fb8b24', '#5c946e', '#6d597a'];

function draftKey(game, turn) {
  return `turnbase.orders.${game}.${turn}`;
}

export function mount(host, { game, seat, names, sendOrders, scope }) {
  const colors = new Map();
  const colorOf = (owner) => {
    if (!owner) return null;
    if (owner === seat.id) return PALETTE[0];
    if (!colors.has(owner)) colors.set(owner, PALETTE[1 + (colors.size % (PALETTE.length - 1))]);
    return colors.get(owner);
  };
  const svg = h('svg:svg', { class: 'map', id: 'map', role: 'group', 'aria-label': 'Map of the galaxy' });
  const legend = h('ul', { class: 'legend', id: 'legend' });
  const ordersList = h('ul', { class: 'orders list', id: 'orders' });
  const err = errorBox();
  const from = h('select', { name: 'from', id: 'order-from' });
  const to = h('select', { name: 'to', id: 'order-to' });
  const ships = h('input', { name: 'ships', id: 'order-ships', type: 'number', min: 1, value: 1, inputmode: 'numeric' });
  const add = h('button', { type: 'submit', id: 'order-add' }, 'Add order');
  const send = h('button', { type: 'button', class: 'primary', id: 'orders-send' }, 'Send orders');
  const sentNote = h('p', { class: 'muted', id: 'orders-state', role: 'status', 'aria-live': 'polite' });
  const form = h(
    'form',
    { class: 'order-form', id: 'order-form', onsubmit: (e) => (e.preventDefault(), addOrder()) },
    field('From', from),
    field('To', to),
    field('Ships', ships),
    add,
  );
  const panel = h('div', { class: 'orders-panel', id: 'orders-panel' }, h('h2', {}, 'Orders'), form, h('form', { id: 'orders-form', onsubmit: (e) => e.preventDefault() }, ordersList, err), h('p', {}, send), sentNote);
  fill(host, svg, legend, panel);

  let view = null;
  let options = null;
  let turn = 0;
  let draft = [];
  let selected = null;
  let sending = false;

  const choices = () => new Map(((options && options.options && options.options.planets) || []).map((c) => [c.planet, c]));

  function save() {
    if (turn) localStorage.setItem(draftKey(game.id, turn), JSON.stringify({ orders: draft, unsent: true }));
  }

  function committed(orders) {
    const spent = new Map();
    for (const o of orders) spent.set(o.from, (spent.get(o.from) || 0) + o.ships);
    return spent;
  }

  function drawOrders() {
    fill(
      ordersList,
      draft.length
        ? draft.map((o, i) => {
            const remove = h('button', { type: 'button', class: 'small', 'aria-label': `Remove order ${i + 1}` }, 'Remove');
            remove.addEventListener('click', () => {
              draft.splice(i, 1);
              save();
              drawOrders();
              drawMap();
            });
            return h('li', { 'data-path': `orders/${i}` }, h('span', {}, `${o.ships} ships: planet ${o.from} → planet ${o.to}`), remove);
          })
        : h('li', { class: 'muted' }, 'No orders: your planets hold.'),
    );
    const open = options && !options.nothing_to_order && options.to_move;
    send.disabled = !open;
    add.disabled = !open;
  }

  function fillSelects() {
    const c = choices();
    fill(from, [...c.keys()].map((id) => h('option', { value: id, selected: id === selected }, `Planet ${id} (${c.get(id).ships} ships)`)));
    const src = c.get(Number(from.value));
    fill(to, ((src && src.targets) || []).map((t) => h('option', { value: t }, `Planet ${t}`)));
    if (src) {
      // No upper bound on the field: the engine is the judge of an order,
      // and its word appears next to the order.
      const left = src.ships - (committed(draft).get(src.planet) || 0);
      if (!ships.value || Number(ships.value) > left) ships.value = String(Math.max(1, Math.ceil(left / 2)));
    }
  }
  from.addEventListener('change', () => {
    selected = Number(from.value);
    fillSelects();
    drawMap();
  });

  function addOrder() {
    const o = { from: Number(from.value), to: Number(to.value), ships: Number(ships.value) };
    if (!Number.isInteger(o.ships) || o.ships < 1) {
      fill(err, h('p', {}, 'Send at least one ship.'));
      return;
    }
    draft.push(o);
    save();
    fill(err);
    fill(sentNote, 'Not sent yet.');
    drawOrders();
    fillSelects();
    drawMap();
  }

  async function sendNow() {
    if (sending) return;
    sending = true;
    try {
      await busy(send, err, async () => {
        try {
          const r = await sendOrders(draft, turn);
          localStorage.setItem(draftKey(game.id, turn), JSON.stringify({ orders: draft, unsent: false }));
          fill(sentNote, r.resolves_early ? 'Orders in: everyone is ready, the turn resolves now.' : `Orders in for turn ${r.turn}. You can change them until the turn resolves.`);
        } catch (e) {
          if (e instanceof ApiError && e.status === 0) fill(sentNote, 'Not sent: no connection. Your orders are kept here and go out when the connection is back.');
          throw e;
        }
      }, panel);
    } finally {
      sending = false;
    }
  }
  send.addEventListener('click', sendNow);
  const retry = () => {
    const saved = turn && JSON.parse(localStorage.getItem(draftKey(game.id, turn)) || 'null');
    if (saved && saved.unsent && draft.length) sendNow();
  };
  scope.on(window, 'online', retry);

  function pick(id) {
    const c = choices();
    if (c.has(id) && (selected === null || !c.get(selected) || !c.get(selected).targets.includes(id))) {
      selected = id;
      from.value = String(id);
      fillSelects();
    } else if (selected !== null && c.get(selected) && c.get(selected).targets.includes(id)) {
      to.value = String(id);
      ships.focus();
      ships.select();
    }
    drawMap();
  }

  function drawMap(readOnly = false) {
    if (!view) return;
    const v = view;
    const size = v.map_size || 60;
    // Sizes in map units, so that a small map and a large one look alike.
    const unit = size / 60;
    const pad = 3 * unit;
    svg.setAttribute('viewBox', `${-pad} ${-pad} ${size + 2 * pad} ${size + 2 * pad}`);
    svg.style.setProperty('--u', `${unit}px`);
    const planets = new Map(v.planets.map((p) => [p.id, p]));
    const c = readOnly ? new Map() : choices();
    const src = selected !== null ? c.get(selected) : null;
    const targets = new Set(src ? src.targets : []);
    const nodes = [h('svg:rect', { x: -pad, y: -pad, width: size + 2 * pad, height: size + 2 * pad, class: 'fog' })];
    for (const p of v.planets) {
      if (p.owner === seat.id) nodes.push(h('svg:circle', { cx: p.x, cy: p.y, r: v.range, class: 'sight' }));
    }
    const line = (a, b, cls, label) => {
      const g = h('svg:g', { class: cls });
      g.append(h('svg:line', { x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
      if (label) g.append(h('svg:text', { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 - 0.8 * unit, class: 'label' }, label));
      return g;
    };
    // Fleets on one route share a line and a label, and attacks on one
    // planet share a warning, so that labels never sit on each other.
    const routes = new Map();
    for (const f of (v.you && v.you.fleets) || []) {
      const key = `${f.from}>${f.to}`;
      if (!routes.has(key)) routes.set(key, { from: f.from, to: f.to, parts: [] });
      routes.get(key).parts.push(`${f.ships} → t${f.arrives}`);
    }
    for (const r of routes.values()) {
      const a = planets.get(r.from);
      const b = planets.get(r.to);
      if (a && b) nodes.push(line(a, b, 'fleet', r.parts.join(', ')));
    }
    const attacks = new Map();
    for (const f of v.incoming || []) {
      if (!attacks.has(f.to)) attacks.set(f.to, []);
      attacks.get(f.to).push(`${f.ships} ${names.get(f.owner) || 'enemy'} t${f.arrives}`);
    }
    for (const [to, parts] of attacks) {
      const b = planets.get(to);
      if (b) nodes.push(h('svg:text', { x: b.x + 2.5 * unit, y: b.y + 4 * unit, class: 'label incoming' }, `⚠ ${parts.join(', ')}`));
    }
    if (!readOnly) {
      for (const o of draft) {
        const a = planets.get(o.from);
        const b = planets.get(o.to);
        if (a && b) nodes.push(line(a, b, 'order', `${o.ships}`));
      }
    }
    for (const p of v.planets) {
      const r = (1.2 + (p.production || 0) * 0.25) * unit;
      const mine = p.owner === seat.id;
      const canSend = c.has(p.id);
      const isTarget = targets.has(p.id);
      const who = p.owner ? (mine ? 'yours' : names.get(p.owner) || 'enemy') : 'neutral';
      const g = h('svg:g', {
        class: `planet${mine ? ' mine' : ''}${selected === p.id ? ' selected' : ''}${isTarget ? ' target' : ''}`,
        tabindex: canSend || isTarget ? 0 : null,
        role: canSend || isTarget ? 'button' : 'img',
        'aria-label': `Planet ${p.id}, ${who}, ${p.ships} ships, makes ${p.production}`,
        dataset: { planet: p.id },
      });
      g.append(h('svg:title', {}, `Planet ${p.id}: ${who}, ${p.ships} ships, +${p.production}/turn`));
      const dot = h('svg:circle', { cx: p.x, cy: p.y, r, class: p.owner ? null : 'neutral' });
      if (p.owner) dot.style.fill = colorOf(p.owner);
      g.append(dot);
      g.append(h('svg:text', { x: p.x, y: p.y - r - 0.6 * unit, class: 'label' }, `${p.id}: ${p.ships}`));
      if (canSend || isTarget) {
        g.addEventListener('click', () => pick(p.id));
        g.addEventListener('keydown', (e) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            pick(p.id);
          }
        });
      }
      nodes.push(g);
    }
    fill(svg, nodes);
    const owners = new Set(v.planets.map((p) => p.owner).filter(Boolean));
    fill(legend, [...owners].map((o) => h('li', {}, h('span', { class: 'swatch', dataset: { color: colorOf(o) } }), o === seat.id ? `${names.get(o)} (you)` : names.get(o) || o)));
    for (const s of legend.querySelectorAll('.swatch')) s.style.background = s.dataset.color;
  }

  return {
    update(v, opts) {
      view = v.view;
      options = opts;
      const newTurn = v.turn;
      if (newTurn !== turn) {
        selected = null;
        turn = newTurn;
        const saved = JSON.parse(localStorage.getItem(draftKey(game.id, turn)) || 'null');
        draft = saved ? saved.orders : ((view.you && view.you.orders) || []).map((o) => ({ from: o.from, to: o.to, ships: o.ships }));
        fill(sentNote, saved && saved.unsent ? 'Not sent yet.' : draft.length ? `Orders in for turn ${turn}.` : '');
        for (const k of Object.keys(localStorage)) {
          if (k.startsWith(`turnbase.orders.${game.id}.`) && k !== draftKey(game.id, turn)) localStorage.removeItem(k);
        }
        fill(err);
      }
      panel.hidden = v.state === 'finished';
      fillSelects();
      drawOrders();
      drawMap();
      if (!performance.getEntriesByName('map-interactive').length) performance.mark('map-interactive');
      if (opts && opts.nothing_to_order) fill(sentNote, 'Nothing to order this turn.');
    },
    replay(v) {
      view = v;
      drawMap(true);
    },
  };
}
