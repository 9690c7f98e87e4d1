"""The world of the browser tests: a real `turnbase up` on loopback ports
of its own, with its own data folder, and headless Chromium (Debian's
`chromium` and `chromium-driver`) driven over WebDriver by Selenium.

Screenshots go to TURNBASE_WEB_ARTIFACTS (default: target/web-artifacts
beside the workspace); axe-core (the copy bundled in axe-selenium-python)
checks every page and fails on serious or critical findings.
"""

import email
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..'))
ARTIFACTS = os.environ.get('TURNBASE_WEB_ARTIFACTS', os.path.join(ROOT, 'target', 'web-artifacts'))
PATIENCE = float(os.environ.get('TURNBASE_WEB_PATIENCE', '20'))
ADMIN_EMAIL = 'ops@example.org'

# Selenium must never fetch a driver or a browser: Debian's are used.
os.environ.setdefault('SE_OFFLINE', 'true')


def binary():
    explicit = os.environ.get('TURNBASE_BIN')
    if explicit:
        return explicit
    target = os.environ.get('CARGO_TARGET_DIR', os.path.join(ROOT, 'target'))
    return os.path.join(target, 'debug', 'turnbase')


def find_program(*names):
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError(f'none of {names} is installed (apt-get install chromium chromium-driver)')


class Stack:
    """`turnbase up` in a fresh data folder; `url` is the banner's Play address."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix='turnbase-web-')
        env = dict(os.environ)
        env.update({
            'BACKEND_DATA_DIR': self.dir,
            'BACKEND_HTTP_ADDR': '127.0.0.1:0',
            'BACKEND_GRPC_PUSH_ADDR': '127.0.0.1:0',
            'GATEWAY_HTTP_ADDR': '127.0.0.1:0',
            'BACKEND_MAIL_DELIVERY': 'file',
            'BACKEND_MAIL_POLL_INTERVAL': '100ms',
            'BACKEND_ADMIN_EMAIL': ADMIN_EMAIL,
            'BACKEND_LOG_LEVEL': 'warn',
            # Many sign-ins from one address in a few minutes.
            'GATEWAY_RATE_PER_IP': '1000/1s',
            'GATEWAY_RATE_PER_SESSION': '1000/1s',
            'BACKEND_LOGIN_IP_RATE': '1000/1m',
            'BACKEND_LOGIN_EMAIL_RATE': '100/1m',
        })
        self.log = open(os.path.join(self.dir, 'turnbase.log'), 'w')
        self.process = subprocess.Popen([binary(), 'up'], env=env, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.url = None
        deadline = time.time() + 60
        banner = []
        while time.time() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            banner.append(line)
            m = re.search(r'Play:\s+(http://\S+?)/\s', line)
            if m:
                self.url = m.group(1)
            if line.startswith('Press Ctrl-C'):
                break
        if not self.url:
            self.stop()
            raise RuntimeError('turnbase up printed no Play address:\n' + ''.join(banner) + open(self.log.name).read())

    def mail_code(self, address, after=0.0):
        """The newest sign-in code mailed to `address` after time `after`."""
        deadline = time.time() + PATIENCE
        while time.time() < deadline:
            found = []
            for path in glob.glob(os.path.join(self.dir, 'mail', '*.eml')):
                if os.path.getmtime(path) < after:
                    continue
                with open(path, 'rb') as f:
                    message = email.message_from_binary_file(f)
                if address not in (message.get('To') or ''):
                    continue
                m = re.search(r'sign-in code[: ]+(?:is )?(\d{6})', message.get('Subject') or '')
                if not m:
                    for part in message.walk():
                        if part.get_content_type() == 'text/plain':
                            m = re.search(r'code is (\d{6})', part.get_payload(decode=True).decode())
                            if m:
                                break
                if m:
                    found.append((os.path.getmtime(path), m.group(1)))
            if found:
                return max(found)[1]
            time.sleep(0.1)
        raise AssertionError(f'no sign-in code mailed to {address}')

    def api(self, method, path, token=None, body=None):
        """A REST call through the gateway: (status, parsed JSON)."""
        import urllib.error
        import urllib.request
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if body is not None:
            request.add_header('content-type', 'application/json')
        if token:
            request.add_header('authorization', f'Bearer {token}')
        try:
            with urllib.request.urlopen(request, timeout=PATIENCE) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as err:
            text = err.read().decode()
            return err.code, json.loads(text) if text else None

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class Browser:
    """One headless Chromium profile: a person on one device."""

    def __init__(self, stack, name, width=1280, height=900, mobile=False):
        self.stack = stack
        self.name = name
        options = webdriver.ChromeOptions()
        options.binary_location = find_program('chromium', 'chromium-browser')
        for arg in ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu',
                    f'--window-size={width},{height}', '--lang=en-GB']:
            options.add_argument(arg)
        if mobile:
            options.add_experimental_option('mobileEmulation', {
                'deviceMetrics': {'width': width, 'height': height, 'pixelRatio': 2.0, 'touch': True},
                'userAgent': 'Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Mobile Safari/537.36',
            })
        options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
        self.driver = webdriver.Chrome(service=Service(find_program('chromedriver')), options=options)
        self.driver.set_script_timeout(30)
        self.errors = []

    # Waiting, finding, acting.

    def wait(self, probe, what, patience=PATIENCE):
        deadline = time.time() + patience
        last = None
        while time.time() < deadline:
            try:
                value = probe()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException) as err:
                last = err
            time.sleep(0.05)
        self.shot(f'timeout-{re.sub(r"[^a-z0-9]+", "-", what.lower())[:40]}')
        raise AssertionError(f'{self.name}: timed out waiting for {what} (last error: {last}); page text:\n{self.text("body")[:2000]}')

    def find(self, css, patience=PATIENCE):
        def probe():
            els = [e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]
            return els[0] if els else None
        return self.wait(probe, f'{css} to show', patience)

    def all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def click(self, css):
        el = self.find(css)
        self.driver.execute_script('arguments[0].scrollIntoView({block: "center"})', el)
        self.wait(lambda: el.is_enabled(), f'{css} to be enabled')
        el.click()
        return el

    def type(self, css, text, clear=True):
        el = self.find(css)
        if clear:
            el.clear()
        el.send_keys(text)
        return el

    def text(self, css):
        try:
            return self.driver.find_element(By.CSS_SELECTOR, css).text
        except WebDriverException:
            return ''

    def wait_text(self, css, needle, patience=PATIENCE):
        return self.wait(lambda: needle in self.text(css), f'"{needle}" in {css}', patience)

    def js(self, script, *args):
        return self.driver.execute_script(script, *args)

    def go(self, path):
        self.driver.get(self.stack.url + path)

    def hash(self, route):
        self.js('location.hash = arguments[0]', route)

    def accept_prompt(self, text=None):
        alert = self.wait(lambda: self._alert(), 'a dialog')
        if text is not None:
            alert.send_keys(text)
        alert.accept()

    def _alert(self):
        try:
            return self.driver.switch_to.alert
        except WebDriverException:
            return None

    # Signing in.

    def guest(self, name):
        self.go('/')
        self.type('#guest-form input[name=display_name]', name)
        self.click('#guest-go')
        self.find('#nav a[href="#/account"]')
        self.wait(lambda: self.text('#conn') == 'Live', 'the live connection')

    def email(self, address):
        self.go('/')
        self.type('#email-form input[name=email]', address)
        asked = time.time() - 1
        self.click('#email-send')
        self.find('#code-step input[name=code]')
        self.type('#code-step input[name=code]', self.stack.mail_code(address, asked))
        self.click('#email-verify')
        self.find('#nav a[href="#/account"]')

    def token(self):
        return self.js("return localStorage.getItem('turnbase.token')")

    # Artefacts and checks.

    def shot(self, page):
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, f'{self.name}-{page}.png')
        try:
            self.driver.save_screenshot(path)
        except WebDriverException:
            pass
        return path

    def axe(self, page):
        """Screenshot, then axe-core; fails on serious or critical findings."""
        self.shot(page)
        self.js(axe_source())
        result = self.driver.execute_async_script(
            'const done = arguments[arguments.length - 1];'
            'axe.run(document, {resultTypes: ["violations"]}).then(r => done(JSON.stringify(r.violations)), e => done(JSON.stringify({error: String(e)})));'
        )
        violations = json.loads(result)
        if isinstance(violations, dict):
            raise AssertionError(f'axe could not run on {page}: {violations}')
        bad = [v for v in violations if v.get('impact') in ('serious', 'critical') and not known_false_positive(v)]
        os.makedirs(ARTIFACTS, exist_ok=True)
        with open(os.path.join(ARTIFACTS, f'{self.name}-{page}.axe.json'), 'w') as f:
            json.dump(violations, f, indent=1)
        if bad:
            lines = [f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}" for v in bad]
            raise AssertionError(f'{self.name} {page}: accessibility findings:\n' + '\n'.join(lines))

    def console_errors(self):
        try:
            entries = self.driver.get_log('browser')
        except WebDriverException:
            return []
        return [e for e in entries if e.get('level') == 'SEVERE' and 'favicon' not in e.get('message', '')]

    def close(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass


_AXE = None


def known_false_positive(violation):
    """axe-core 3.1.1 (the copy axe-selenium-python bundles) predates the
    `one-time-code` autocomplete token, which HTML defines and phones use to
    offer a mailed code; only that finding, only on such fields, is set
    aside."""
    return violation['id'] == 'autocomplete-valid' and all(
        'autocomplete="one-time-code"' in n.get('html', '') for n in violation['nodes'])


def axe_source():
    global _AXE
    if _AXE is None:
        import axe_selenium_python
        path = os.path.join(os.path.dirname(axe_selenium_python.__file__), 'node_modules', 'axe-core', 'axe.min.js')
        with open(path) as f:
            _AXE = f.read()
    return _AXE
