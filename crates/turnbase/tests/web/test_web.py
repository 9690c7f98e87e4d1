"""End-to-end tests of the web client and the admin console in headless
Chromium against a real `turnbase up` (see harness.py). Run by the
README's test command (scripts/test); alone:

    python3 -m unittest discover -s crates/turnbase/tests/web -v
"""

import time
import unittest

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.support.ui import Select

from harness import ADMIN_EMAIL, PATIENCE, Browser, Stack

# A small map that everyone sees whole: every planet is a target of every
# other, so each player can always reach the other's home.
SMALL_MAP = {'map_size': '20', 'planets': '6', 'range': '100'}


class WebClient(unittest.TestCase):
    stack = None

    @classmethod
    def setUpClass(cls):
        cls.stack = Stack()

    @classmethod
    def tearDownClass(cls):
        cls.stack.stop()

    def setUp(self):
        self.browsers = []

    def tearDown(self):
        for b in self.browsers:
            errors = b.console_errors()
            b.close()
            # A page that throws is a defect even when the test got through.
            self.assertEqual([e['message'] for e in errors if 'Failed to load resource' not in e['message']], [], f'{b.name}: console errors')

    def browser(self, name, **kw):
        b = Browser(self.stack, name, **kw)
        self.browsers.append(b)
        return b

    # Steps shared by the scenarios.

    def create_game(self, b, engine, title, settings=None, schedule=('interval', '1h'), bots=0, bot_delay=None, shots=False):
        b.hash('#/games/new')
        Select(b.find('#engine')).select_by_value(engine)
        b.type('#title', title)
        for name, value in (settings or {}).items():
            b.type(f'#new-game-form .settings input[name={name}]', value)
        kind, value = schedule
        Select(b.find('#schedule-kind')).select_by_value(kind)
        b.type({'interval': '#every', 'per_move': '#limit'}[kind], value)
        b.wait(lambda: b.all('#preview li'), 'the schedule preview')
        if bot_delay is not None:
            b.click('#new-game-form details.rules summary')
            b.type('#bot-delay', bot_delay)
        b.type('#bots', str(bots))
        if shots:
            b.axe('new-game')
        before = b.js('return location.hash')
        # A double click creates one game, not two.
        ActionChains(b.driver).double_click(b.find('#create')).perform()
        b.wait(lambda: b.js('return location.hash') != before and '/games/new' not in b.js('return location.hash'), 'the new game page')
        game = b.js('return location.hash').split('/')[-1]
        status, mine = self.stack.api('GET', '/api/v1/user/me/games?limit=100', b.token())
        self.assertEqual(status, 200, mine)
        self.assertEqual(sum(1 for i in mine['items'] if i['game']['title'] == title), 1, 'one game per double click')
        return game

    def apply(self, b, game, race):
        b.hash(f'#/games/{game}')
        b.type('#race-name', race)
        b.wait_text('#race-status', 'is free')
        b.click('#apply')
        b.find('#main p button')  # "Withdraw my application"

    def approve(self, b, game, race):
        b.hash(f'#/games/{game}')
        b.wait(lambda: [e for e in b.all('#applications button') if e.text == f'Approve {race}'], f'the application of {race}')
        [e for e in b.all('#applications button') if e.text == f'Approve {race}'][0].click()
        b.wait_text('#seats', race)

    def start(self, b):
        b.click('#start')
        b.find('#board', patience=60)

    def current_turn(self, b):
        text = b.text('#clock')
        return int(text.split('Turn ')[1].split(' ')[0]) if 'Turn ' in text else 0

    def send_conquest_order(self, b, other_race, ships='1'):
        mine = b.find('#map .planet.mine[role=button]')
        mine.click()
        target = b.find(f'#map .planet.target[aria-label*="{other_race}"]')
        target.click()
        b.type('#order-ships', ships)
        b.click('#order-add')
        b.click('#orders-send')

    def wait_sent(self, b, turn):
        """The orders for `turn` are in: the page says so, or (the last
        orders of the turn resolve it at once) the next turn has opened."""
        b.wait(lambda: 'Orders in' in b.text('#orders-state') or self.current_turn(b) > turn, f'the orders for turn {turn} to be in')

    # Scenarios.

    def test_1_two_players_play_three_turns_of_conquest_live(self):
        ann = self.browser('ann')
        bea = self.browser('bea')
        ann.guest('Ann')
        ann.axe('lobby')
        bea.email('bea@example.org')
        game = self.create_game(ann, 'conquest', 'Conquest for two', SMALL_MAP, bots=1, shots=True)
        self.apply(ann, game, 'Ann of Vega')
        ann.axe('game-enrolling')
        self.apply(bea, game, 'Bea of Lyra')
        self.approve(ann, game, 'Ann of Vega')
        self.approve(ann, game, 'Bea of Lyra')
        self.start(ann)
        bea.hash('#/mine')
        bea.find(f'#my-games [data-game="{game}"] a').click()
        for b in (ann, bea):
            b.find('#map')
            b.js('window.__stayed = true')
        ann.axe('conquest')
        races = {ann: ('Ann of Vega', 'Bea of Lyra'), bea: ('Bea of Lyra', 'Ann of Vega')}
        for turn in (1, 2, 3):
            for b in (ann, bea):
                b.wait(lambda b=b: self.current_turn(b) == turn, f'turn {turn} on {b.name}')
            # A order the engine refuses is named next to the order.
            if turn == 1:
                self.send_conquest_order(bea, 'Ann of Vega', ships='999')
                bea.wait(lambda: bea.all('#orders li[data-path="orders/0"] .field-error'), 'the engine\'s word on the order')
                bea.find('#orders li button').click()
            for b in (ann, bea):
                self.send_conquest_order(b, races[b][1])
                self.wait_sent(b, turn)
            # Both sent, the bot counts as ready: the turn resolves now, and
            # each page shows it without a reload.
            for b in (ann, bea):
                b.wait(lambda b=b: self.current_turn(b) == turn + 1, f'turn {turn} resolved on {b.name}')
                self.assertTrue(b.js('return window.__stayed === true'), 'the page was not reloaded')
                b.wait(lambda b=b: len(b.all('#history li')) >= turn, 'the history')
        # The replay: my view after turn 3 shows the other's fleet on its
        # way to my home planet.
        for b in (ann, bea):
            b.js("const s = document.querySelector('#replay'); s.value = '3'; s.dispatchEvent(new Event('input'))")
            b.wait_text('#replay-label', 'After turn 3')
            b.wait(lambda b=b: any(races[b][1] in t.text for t in b.all('#map text.incoming')), f'{races[b][1]} fleet in the replay of {b.name}')
            b.shot('conquest-replay')
            b.click('#replay-live')
        bea.hash('#/inbox')
        bea.find('#inbox li.unread')
        bea.axe('inbox')
        self.assertNotEqual(bea.text('#unread'), '0')
        bea.click('#read-all')
        bea.wait(lambda: not bea.find('#unread', patience=1).is_displayed() if bea.all('#unread') and bea.all('#unread')[0].is_displayed() else True, 'the badge to clear')
        bea.hash('#/settings')
        bea.find('#prefs')
        bea.axe('alerts')
        # A bad time zone is named next to its field.
        bea.type('#prefs-form input[name=time_zone]', 'Mars/Olympus')
        bea.click('#prefs-save')
        bea.wait(lambda: bea.all('[data-path="time_zone"] .field-error') or 'time_zone' in bea.text('#prefs-form .error'), 'the time zone error')
        bea.type('#prefs-form input[name=time_zone]', 'Europe/Berlin')
        bea.click('#prefs-save')
        bea.wait(lambda: not bea.all('.field-error'), 'the error to clear')
        bea.hash('#/mine')
        bea.find('#my-games li')
        bea.axe('my-games')
        bea.hash('#/account')
        bea.find('#sessions li')
        bea.axe('account')
        # Dark mode is readable too (contrast included).
        bea.driver.execute_cdp_cmd('Emulation.setEmulatedMedia', {'features': [{'name': 'prefers-color-scheme', 'value': 'dark'}]})
        bea.hash(f'#/games/{game}')
        bea.find('#map')
        bea.axe('conquest-dark')
        bea.hash('#/')
        bea.find('#open-games')
        bea.axe('lobby-dark')

        # An event whose signature does not verify is dropped, and the page
        # says so. (The gateway cannot be made to sign wrongly on demand, so
        # the frame is handed to the client's stream as if it had arrived.)
        delivered = bea.driver.execute_async_script('''
            const done = arguments[arguments.length - 1];
            const src = document.querySelector('script[type=module]').src;
            (async () => {
              const { live } = await import(src.replace('app.js', 'live.js'));
              const keys = await (await fetch('/.well-known/turnbase-signing-keys')).json();
              let heard = 0;
              const off = live.on('game.turn_resolved', () => { heard += 1; });
              const envelope = JSON.stringify({ id: 'x.1', kind: 'game.turn_resolved', payload: { game_id: arguments[0], summary: 'forged' } });
              const sig = btoa(String.fromCharCode(...new Uint8Array(64))).replace(/=+$/, '');
              await live.receive(JSON.stringify({ type: 'event', id: 'x.1', kid: keys.keys[0].kid, sig, envelope }));
              off();
              done(heard);
            })().catch((e) => done(String(e)));
        ''', game)
        self.assertEqual(delivered, 0, 'a forged event reached a listener')
        bea.wait(lambda: bea.find('#warning', patience=2).is_displayed(), 'the signature warning')
        self.assertIn('does not verify', bea.text('#warning'))
        self.assertNotEqual(bea.js("return localStorage.getItem('turnbase.last-event')"), 'x.1', 'a forged id is never resumed from')

    def test_2_reversi_against_the_bot_to_its_end(self):
        cy = self.browser('cy')
        cy.guest('Cy')
        game = self.create_game(cy, 'reversi', 'Reversi with the bot', {}, schedule=('per_move', '1h'), bots=1, bot_delay='0s')
        self.apply(cy, game, 'Cy Black')
        self.approve(cy, game, 'Cy Black')
        self.start(cy)
        cy.find('#reversi')
        cy.js('window.__stayed = true')
        cy.axe('reversi')
        deadline = time.time() + 240
        moves = 0
        while time.time() < deadline:
            status = cy.text('#reversi-status')
            if 'Game over' in status:
                break
            legal = [e for e in cy.all('#reversi button.sq.legal') if e.is_enabled()]
            if 'Your move' in status and legal:
                turn = self.current_turn(cy)
                legal[0].click()
                moves += 1
                # The move resolves at once; the bot's answer arrives live.
                cy.wait(lambda: self.current_turn(cy) > turn or 'Game over' in cy.text('#reversi-status'), 'the move to resolve')
            else:
                time.sleep(0.1)
        self.assertIn('Game over', cy.text('#reversi-status'), f'after {moves} moves')
        self.assertGreater(moves, 3)
        self.assertTrue(cy.js('return window.__stayed === true'), 'played without a reload')
        cy.shot('reversi-finished')
        # History with replay.
        cy.js("const s = document.querySelector('#replay'); s.value = '1'; s.dispatchEvent(new Event('input'))")
        cy.wait_text('#replay-label', 'After turn 1')
        cy.wait(lambda: len(cy.all('#reversi .disc')) == 5, 'the board after the first move')

    def test_3_a_session_revoked_elsewhere_is_signed_out_within_a_second(self):
        first = self.browser('dee-laptop')
        second = self.browser('dee-phone')
        first.email('dee@example.org')
        first.wait(lambda: first.text('#conn') == 'Live', 'the live connection')
        second.email('dee@example.org')
        second.hash('#/account')
        second.wait(lambda: len(second.all('#sessions li')) == 2, 'both sessions listed')
        other = [li for li in second.all('#sessions li') if 'this device' not in li.text][0]
        button = other.find_element('css selector', 'button')
        button.click()
        clicked = time.time()
        first.find('#guest-form', patience=1.0)
        took = time.time() - clicked
        print(f'\nrevoked session signed out after {took * 1000:.0f} ms')
        self.assertIn('signed out from another device', first.text('#toasts'))

    def test_4_the_admin_forces_a_turn_and_blocks_an_account(self):
        eve = self.browser('eve')
        eve.guest('Eve')
        token = eve.token()
        status, game = self.stack.api('POST', '/api/v1/user/games', token, {
            'title': 'Eve versus the bots', 'engine': 'conquest', 'settings': {'map_size': 20, 'planets': 6, 'range': 100},
            'enrol_deadline': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(time.time() + 86400)),
            'schedule': {'kind': 'interval', 'every': '1h'},
        })
        self.assertEqual(status, 201, game)
        gid = game['id']
        status, app = self.stack.api('POST', f'/api/v1/user/games/{gid}/applications', token, {'race_name': 'Eve Prime'})
        self.assertEqual(status, 201, app)
        self.assertEqual(self.stack.api('POST', f'/api/v1/user/games/{gid}/applications/{app["id"]}/approve', token)[0], 200)
        self.assertEqual(self.stack.api('POST', f'/api/v1/user/games/{gid}/bots', token, {'name': 'Rigel Bot'})[0], 201)
        self.assertEqual(self.stack.api('POST', f'/api/v1/user/games/{gid}/start', token)[0], 200)
        eve.hash(f'#/games/{gid}')
        eve.find('#map', patience=60)
        eve.wait(lambda: self.current_turn(eve) == 1, 'turn 1')
        # Planned by the scheduler: due in an hour, and who is awaited.
        eve.wait(lambda: 'in 59 min' in eve.text('#clock') and 'Eve Prime' in eve.text('#clock'), 'the planned turn')

        ops = self.browser('ops')
        ops.go('/admin/')
        ops.type('#email-form input[name=email]', ADMIN_EMAIL)
        asked = time.time() - 1
        ops.click('#email-send')
        ops.type('#code-step input[name=code]', self.stack.mail_code(ADMIN_EMAIL, asked))
        ops.click('#email-verify')
        ops.find('#accounts')
        ops.axe('admin-accounts')
        ops.js("location.hash = '#/games'")
        row = ops.find(f'#games tr[data-game="{gid}"]')
        [b for b in row.find_elements('css selector', 'button') if b.text == 'Force turn'][0].click()
        ops.accept_prompt('testing the console')
        ops.wait(lambda: 'Force turn: done.' in ops.text('#toasts') or ops.text('#main .error'), 'the console to answer')
        self.assertEqual(ops.text('#main .error'), '', 'the console shows no error')
        # Eve's page hears the forced turn.
        eve.wait(lambda: self.current_turn(eve) == 2, 'the forced turn on the player\'s page')
        ops.axe('admin-games')
        ops.js("location.hash = '#/accounts'")
        ops.type('#account-q', 'Eve')
        ops.find('#main form.filters button[type=submit]').click()
        row = ops.wait(lambda: [r for r in ops.all('#accounts tbody tr') if 'Eve' in r.text and 'Block' in r.text], 'Eve in the accounts')[0]
        [b for b in row.find_elements('css selector', 'button') if b.text == 'Block'][0].click()
        ops.accept_prompt('spam')
        ops.wait(lambda: [r for r in ops.all('#accounts tbody tr') if 'Eve' in r.text and 'Unblock' in r.text], 'Eve blocked')
        # Blocking ends Eve's sessions: her page signs out.
        eve.find('#guest-form', patience=5)
        for section in ('engines', 'mail', 'dead-letters', 'audit', 'live'):
            ops.js(f"location.hash = '#/{section}'")
            ops.wait(lambda: ops.text('h1') and ops.js('return document.title').lower().startswith(ops.text('h1').lower()[:4]), section)
            if section == 'live':
                ops.wait(lambda: 'Live connections' in ops.text('#counters'), 'the counters')
            if section == 'audit':
                ops.wait_text('#audit', 'block')
            ops.axe(f'admin-{section}')

    def test_5_a_phone_signs_in_and_sends_orders(self):
        fay = self.browser('fay-phone', width=360, height=740, mobile=True)
        fay.go('/')
        fay.find('#guest-form')
        fay.axe('signin')
        fay.guest('Fay')
        fay.axe('lobby')
        game = self.create_game(fay, 'conquest', 'Pocket conquest', SMALL_MAP, bots=1)
        fay.shot('new-game-done')
        self.apply(fay, game, 'Fay Minor')
        self.approve(fay, game, 'Fay Minor')
        fay.axe('game-enrolling')
        self.start(fay)
        fay.find('#map')
        fay.axe('conquest')
        # No horizontal scrolling on a 360-px screen.
        self.assertLessEqual(fay.js('return document.documentElement.scrollWidth'), 362)
        # Orders typed while offline are kept and go out when it is back.
        fay.find('#map .planet.mine[role=button]')
        fay.driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        self.send_conquest_order(fay, 'Bot')
        fay.wait_text('#orders-state', 'Not sent')
        fay.driver.set_network_conditions(offline=False, latency=0, download_throughput=-1, upload_throughput=-1)
        self.wait_sent(fay, 1)
        # The bot was ready, so the order resolved the turn: the fleet flies.
        fay.wait(lambda: self.current_turn(fay) == 2 and fay.all('#map .fleet'), 'the fleet of the order sent when back online')
        fay.shot('orders-sent')
        for route, page in (('#/inbox', 'inbox'), ('#/settings', 'alerts'), ('#/account', 'account'), ('#/mine', 'my-games')):
            fay.hash(route)
            fay.find('h1')
            time.sleep(0.3)
            fay.axe(page)


if __name__ == '__main__':
    unittest.main(verbosity=2)
