// The Reversi board: 8×8 squares, my legal moves marked when it is my
// move (a click or Enter plays one), the last move outlined, the disc
// count; the bot's answer arrives live.

import { h, fill, busy, errorBox } from './ui.js';

const FILES = 'abcdefgh';

export function mount(host, { names, sendOrders }) {
  const grid = h('div', { class: 'reversi', id: 'reversi', role: 'grid', 'aria-label': 'Reversi board' });
  const status = h('p', { id: 'reversi-status', role: 'status', 'aria-live': 'polite' });
  const err = errorBox();
  fill(host, status, grid, err);
  let turn = 0;
  let sending = false;

  function draw(v, legal, clickable) {
    const rows = v.board || [];
    const cells = [];
    rows.forEach((line, i) => {
      const row = 8 - i;
      const rowCells = [];
      for (let col = 0; col < 8; col++) {
        const name = `${FILES[col]}${row}`;
        const disc = line[col];
        const canPlay = clickable && legal.has(name);
        const label = `${name}: ${disc === 'B' ? 'black' : disc === 'W' ? 'white' : canPlay ? 'empty, you can play here' : 'empty'}`;
        const cell = h(
          canPlay ? 'button' : 'div',
          {
            class: `sq${canPlay ? ' legal' : ''}${v.last_move === name ? ' last' : ''}`,
            role: 'gridcell',
            'aria-label': label,
            type: canPlay ? 'button' : null,
            dataset: { square: name },
          },
          disc === 'B' ? h('span', { class: 'disc black' }) : disc === 'W' ? h('span', { class: 'disc white' }) : null,
        );
        if (canPlay) cell.addEventListener('click', () => play(name, cell));
        rowCells.push(cell);
      }
      cells.push(h('div', { role: 'row', class: 'row' }, rowCells));
    });
    fill(grid, cells);
  }

  async function play(square, button) {
    if (sending) return;
    sending = true;
    for (const b of grid.querySelectorAll('button.sq')) b.disabled = true;
    // Said before sending: the turn's result may arrive before the answer.
    status.textContent = `Playing ${square}…`;
    await busy(button, err, () => sendOrders([{ square }], turn));
    sending = false;
  }

  return {
    update(v) {
      turn = v.turn;
      const view = v.view;
      const mine = v.to_move && v.state === 'running';
      const legal = new Set(mine ? view.legal_moves || [] : []);
      const color = view.you && view.you.color;
      const d = view.discs || {};
      if (v.state === 'finished') status.textContent = `Game over: black ${d.black}, white ${d.white}.`;
      else if (mine) status.textContent = `Your move (${color}). Black ${d.black}, white ${d.white}.`;
      else status.textContent = `Waiting for ${names.get(view.to_move) || 'the other player'}. You play ${color}. Black ${d.black}, white ${d.white}.`;
      draw(view, legal, mine);
      if (!performance.getEntriesByName('map-interactive').length) performance.mark('map-interactive');
    },
    replay(view, t) {
      const d = view.discs || {};
      status.textContent = `After turn ${t.turn}: black ${d.black}, white ${d.white}.`;
      draw(view, new Set(), false);
    },
  };
}

