/*
 * Latchkey's built-in OpenID Connect login page: the behaviour behind index.html.
 *
 * Why it exists: an application that configures no login page of its own still needs a place
 * where its users prove themselves during an OIDC authorization. This script runs the original
 * clients' device protocol in the browser (PIN login, sign-up and activation, adding this
 * browser as a device, forgot/reset PIN) against the server routes under
 * {base}/openid/login/api/, which need no API key but a live htOidTxid, and then sends the
 * browser to the redirectTo of the successful answer (redirect_uri?code=...&state=...).
 *
 * What it keeps: in localStorage, per applicationUuid and per username (NFKC, lower-cased, as
 * the server matches usernames), {username, deviceUuid, authKey, salt}. The salt is 128 random
 * bytes made here; hashedPin = Base64(SHA-512(salt bytes || UTF-8 PIN)), as the original
 * clients compute it. An authKey works once: the new one of every successful answer is stored
 * BEFORE the browser leaves the page.
 *
 * What it must never do: hold or ask for the application's API key; send, store or log the PIN
 * (only its hash leaves, and the PIN fields are cleared after use); log any secret (authKey,
 * salt, codes, tokens) to the console; put server text into the page as HTML (textContent
 * only); load anything from another origin.
 */
'use strict';

(() => {
  // == constants ===============================================================================

  const STORAGE_PREFIX = 'latchkey:devices:';
  const SALT_BYTES = 128;
  const PIN_RULE = /^[0-9]{4,12}$/;
  const CODE_DEAD_TRANSACTION = 'AN-OIDC-1001';
  const UNSAFE_SCHEMES = new Set(['javascript:', 'data:', 'vbscript:', 'blob:', 'file:']);

  const TITLES = {
    loading: 'Sign in',
    fatal: 'Cannot sign in here',
    login: 'Sign in',
    welcome: 'Welcome',
    signup: 'Create an account',
    'add-device': 'Add this browser',
    forgot: 'Forgot your PIN',
    'activate-user': 'Confirm your e-mail',
    'activate-device': 'Confirm this browser',
    'reset-pin': 'Choose a new PIN',
    done: 'Signed in',
  };

  /** Extra advice for error codes whose server message alone leaves the person stuck. */
  const HINTS = {
    'AN-AUTH-1006': 'Check your PIN and try again.',
    'AN-AUTH-1029': 'One more wrong PIN locks this browser for a while; "Forgot your PIN?" ' +
      'still works.',
    'AN-HENG-1001': 'This browser holds an outdated key for the account. ' +
      'Use "Forgot your PIN?" to link it again.',
    'AN-HENG-1005': 'This browser\'s device is not known to the server any more. Remove the ' +
      'account from this browser, then add this browser again.',
    'AN-AUTH-1031': 'Wait a few minutes, or use "Forgot your PIN?".',
  };

  const $ = (id) => {
    const element = document.getElementById(id);
    if (!element) {
      throw new Error(`login page: element #${id} is missing`);
    }
    return element;
  };

  /** What the page knows about the flow; never holds a PIN. */
  const state = {
    txid: '',
    nonce: '',
    apiBase: '',
    context: null,
    /** The step waiting for a code from an e-mail: {mode, username, deviceUuid?, email?}. */
    pending: null,
  };

  // == errors ==================================================================================

  /** An error answer of the API (or of the page itself) that the person should read. */
  class PageError extends Error {
    constructor(message, code = '', status = 0) {
      super(message);
      this.name = 'PageError';
      this.code = code;
      this.status = status;
    }
  }

  // == API =====================================================================================

  /**
   * Calls {base}/openid/login/api/<name>. A body makes it a JSON POST; none makes it a GET.
   * Resolves with the answer on a SUCCESS envelope; throws PageError with the envelope's
   * message and code otherwise.
   */
  async function api(name, body) {
    const url = new URL(state.apiBase + name, location.href);
    url.searchParams.set('htOidTxid', state.txid);
    if (state.nonce && body !== undefined) {
      url.searchParams.set('nonce', state.nonce);
    }
    const init = {
      method: body === undefined ? 'GET' : 'POST',
      headers: { accept: 'application/json' },
      credentials: 'same-origin',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
    };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }

    let response;
    try {
      response = await fetch(url, init);
    } catch {
      throw new PageError('Could not reach the server. Check your connection and try again.');
    }

    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    const status = answer && typeof answer === 'object' ? answer.responseStatus : null;
    if (response.ok && status && status.status === 'SUCCESS') {
      return answer;
    }
    if (status && typeof status.message === 'string' && status.message) {
      throw new PageError(status.message, String(status.code || ''), response.status);
    }
    throw new PageError(`The server answered unexpectedly (HTTP ${response.status}).`, '',
      response.status);
  }

  // == device store (localStorage) =============================================================

  /** The key the server matches usernames by: NFKC, then lower case. */
  function matchKey(username) {
    return username.normalize('NFKC').toLowerCase();
  }

  function storageKey() {
    return STORAGE_PREFIX + state.context.applicationUuid;
  }

  /** The stored map; without a prototype, so that a username like "__proto__" is a plain key. */
  function readDevices() {
    const devices = Object.create(null);
    try {
      const parsed = JSON.parse(localStorage.getItem(storageKey()) || '{}');
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) {
        Object.assign(devices, parsed);
      }
    } catch {
      // unreadable: treat as empty
    }
    return devices;
  }

  function isRecord(value) {
    return value && typeof value === 'object' && typeof value.username === 'string' &&
      typeof value.deviceUuid === 'string' && typeof value.authKey === 'string' &&
      typeof value.salt === 'string';
  }

  /** Known devices of this application in this browser, sorted by username. */
  function knownDevices() {
    return Object.values(readDevices()).filter(isRecord)
      .sort((a, b) => a.username.localeCompare(b.username));
  }

  function findDevice(username) {
    const record = readDevices()[matchKey(username)];
    return isRecord(record) ? record : null;
  }

  /** Throws when the browser refuses to store (quota, privacy mode). */
  function saveDevice(record) {
    const devices = readDevices();
    devices[matchKey(record.username)] = {
      username: record.username,
      deviceUuid: record.deviceUuid,
      authKey: record.authKey,
      salt: record.salt,
    };
    localStorage.setItem(storageKey(), JSON.stringify(devices));
  }

  function forgetDevice(username) {
    const devices = readDevices();
    delete devices[matchKey(username)];
    localStorage.setItem(storageKey(), JSON.stringify(devices));
  }

  function storageWorks() {
    try {
      const probe = STORAGE_PREFIX + 'probe';
      localStorage.setItem(probe, '1');
      localStorage.removeItem(probe);
      return true;
    } catch {
      return false;
    }
  }

  // == PIN hashing (WebCrypto) =================================================================

  function toBase64(bytes) {
    let binary = '';
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary);
  }

  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i += 1) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes;
  }

  function newSalt() {
    return toBase64(crypto.getRandomValues(new Uint8Array(SALT_BYTES)));
  }

  /** Base64(SHA-512(salt bytes || UTF-8 PIN)): the original clients' hashedPin. */
  async function hashPin(saltBase64, pin) {
    const salt = fromBase64(saltBase64);
    const pinBytes = new TextEncoder().encode(pin);
    const input = new Uint8Array(salt.length + pinBytes.length);
    input.set(salt, 0);
    input.set(pinBytes, salt.length);
    try {
      return toBase64(new Uint8Array(await crypto.subtle.digest('SHA-512', input)));
    } finally {
      input.fill(0);
      pinBytes.fill(0);
    }
  }

  function cryptoWorks() {
    return Boolean(window.isSecureContext && window.crypto && crypto.subtle &&
      crypto.getRandomValues);
  }

  // == view ====================================================================================

  function setTitle(key) {
    const title = TITLES[key] || 'Sign in';
    $('title').textContent = title;
    const appName = state.context && state.context.applicationName;
    document.title = appName ? `${title} \u2013 ${appName}` : title;
  }

  /** Shows one screen (and its title); focuses its first field, or the heading. */
  function show(screen, titleKey = screen) {
    for (const section of document.querySelectorAll('.screen')) {
      section.hidden = section.dataset.screen !== screen;
    }
    setTitle(titleKey);
    const section = $(`screen-${screen}`);
    const first = section.querySelector('[data-autofocus]') || section.querySelector(
      'input:not([type=hidden]):not([disabled]), select:not([disabled])');
    if (first && !first.closest('[hidden]')) {
      first.focus();
    } else {
      $('title').focus();
    }
  }

  function clearMessages() {
    $('error').hidden = true;
    $('notice').hidden = true;
    for (const field of document.querySelectorAll('[aria-invalid]')) {
      field.removeAttribute('aria-invalid');
    }
  }

  function showNotice(message) {
    $('notice-message').textContent = message;
    $('notice').hidden = false;
  }

  /** Server messages are short phrases; shown in the page they end like sentences. */
  function asSentence(text) {
    const trimmed = String(text).trim();
    return /[.!?]$/.test(trimmed) ? trimmed : `${trimmed}.`;
  }

  function showError(message, code = '', field = null) {
    const hint = HINTS[code];
    $('error-message').textContent = hint ? `${asSentence(message)} ${hint}` : asSentence(message);
    $('error-code').textContent = code ? `Error code ${code}` : '';
    $('error-code').hidden = !code;
    $('error').hidden = false;
    if (field) {
      field.setAttribute('aria-invalid', 'true');
      field.setAttribute('aria-errormessage', 'error-message');
      field.focus();
    }
  }

  /** Nothing more can be done on this page. */
  function fatal(message, hint = '') {
    clearMessages();
    $('fatal-message').textContent = asSentence(message);
    $('fatal-hint').textContent = hint;
    show('fatal');
  }

  function report(error) {
    if (error instanceof PageError && error.code === CODE_DEAD_TRANSACTION) {
      fatal(error.message, 'Go back to the application and start signing in again.');
      return;
    }
    if (error instanceof PageError) {
      showError(error.message, error.code);
      return;
    }
    // A bug of the page: say so without leaking details (and without logging secrets).
    showError('Something went wrong on this page. Reload it and try again.');
  }

  /** Runs one form submission: clears messages, disables the form while it runs. */
  async function submit(form, task) {
    clearMessages();
    const controls = [...form.querySelectorAll('input, select, button')];
    form.setAttribute('aria-busy', 'true');
    for (const control of controls) {
      control.disabled = true;
    }
    try {
      await task();
    } catch (error) {
      report(error);
    } finally {
      form.removeAttribute('aria-busy');
      for (const control of controls) {
        control.disabled = false;
      }
    }
  }

  function defaultDeviceName() {
    const ua = navigator.userAgent;
    let browser = 'Browser';
    if (/Edg\//.test(ua)) {
      browser = 'Edge';
    } else if (/Firefox\//.test(ua)) {
      browser = 'Firefox';
    } else if (/Chrom(e|ium)\//.test(ua)) {
      browser = 'Chrome';
    } else if (/Safari\//.test(ua)) {
      browser = 'Safari';
    }
    let system = '';
    if (/Android/.test(ua)) {
      system = 'Android';
    } else if (/iPhone|iPad/.test(ua)) {
      system = 'iOS';
    } else if (/Windows/.test(ua)) {
      system = 'Windows';
    } else if (/Mac OS X/.test(ua)) {
      system = 'macOS';
    } else if (/Linux/.test(ua)) {
      system = 'Linux';
    }
    return system ? `${browser} on ${system}` : browser;
  }

  // == navigation between screens ==============================================================

  /** The start screen: PIN login when this browser knows an account, else the welcome. */
  function goHome(hint = '') {
    clearMessages();
    state.pending = null;
    const known = knownDevices();
    const hinted = hint ? findDevice(hint) : null;
    if (known.length === 0 || (hint && !hinted)) {
      goWelcome(hint);
      return;
    }

    const select = $('login-user');
    select.replaceChildren(...known.map((record) => {
      const option = document.createElement('option');
      option.value = record.username;
      option.textContent = record.username;
      return option;
    }));
    select.value = (hinted || known[0]).username;
    $('login-pin').value = '';
    show('login');
  }

  function goWelcome(prefill = '') {
    clearMessages();
    const openSignup = Boolean(state.context.openSignup);
    $('go-signup').hidden = !openSignup;
    $('go-add-device').className = openSignup ? 'secondary' : 'primary';
    $('welcome-intro').textContent = openSignup
      ? 'This browser is not linked to an account yet.'
      : 'This browser is not linked to an account yet. Add it to your account.';
    $('welcome-back').hidden = knownDevices().length === 0;
    if (prefill) {
      $('signup-username').value = prefill;
      $('add-device-username').value = prefill;
    }
    show('welcome');
  }

  /** The code-from-e-mail + new PIN screen for state.pending.mode. */
  function goConfirm(notice) {
    const pending = state.pending;
    const intros = {
      'activate-user': `If the username ${pending.username} was free, we sent a code to ` +
        `${pending.email}: enter it and choose a PIN for this browser. If it is already ` +
        'yours, its e-mail address got a note instead: go back and add this browser as a ' +
        'device.',
      'activate-device': `We sent a code to the e-mail address of ${pending.username}. ` +
        'Enter it and choose a PIN for this browser.',
      'reset-pin': `We sent a code to the e-mail address of ${pending.username}. Enter it ` +
        'and choose a new PIN.',
    };
    $('confirm-intro').textContent = intros[pending.mode];
    $('screen-confirm').dataset.mode = pending.mode;
    $('confirm-device-field').hidden = pending.mode !== 'activate-user';
    $('confirm-device-name').value = defaultDeviceName();
    $('confirm-pin-label').textContent =
      pending.mode === 'reset-pin' ? 'Choose a new PIN' : 'Choose a PIN';
    for (const id of ['confirm-token', 'confirm-pin', 'confirm-pin2']) {
      $(id).value = '';
    }
    show('confirm', pending.mode);
    if (notice) {
      showNotice(notice);
    }
  }

  /**
   * After a successful login, activation or reset: store the device's new authKey, then follow
   * redirectTo. Storing comes first: the old authKey no longer works.
   */
  function finish(record, answer) {
    const target = typeof answer.redirectTo === 'string' ? answer.redirectTo : '';
    let url = null;
    try {
      url = new URL(target);
    } catch {
      url = null;
    }
    if (!url || UNSAFE_SCHEMES.has(url.protocol)) {
      throw new PageError('The server did not say where to go next. Start signing in again ' +
        'from the application.');
    }

    let saved = false;
    if (typeof answer.authKey === 'string' && answer.authKey &&
      typeof record.deviceUuid === 'string' && record.deviceUuid) {
      try {
        saveDevice({ ...record, authKey: answer.authKey });
        saved = true;
      } catch {
        saved = false;
      }
    }

    clearMessages();
    const link = $('done-link');
    link.href = url.href;
    show('done');
    if (!saved) {
      $('done-message').textContent = 'Signed in, but this browser did not keep its device ' +
        'key. Next time, use "I already have an account" to add it again.';
      link.hidden = false;
      link.focus();
      return;
    }
    location.assign(url.href);
  }

  // == flows ===================================================================================

  function onLogin(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const record = findDevice($('login-user').value);
    const pinField = $('login-pin');
    const pin = pinField.value;
    if (!record) {
      goHome();
      return;
    }
    if (!pin) {
      clearMessages();
      showError('Enter your PIN.', '', pinField);
      return;
    }
    pinField.value = '';

    return submit(form, async () => {
      const hashedPin = await hashPin(record.salt, pin);
      const answer = await api('login', {
        username: record.username,
        deviceUuid: record.deviceUuid,
        authKey: record.authKey,
        hashedPin,
      });
      finish(record, answer);
    }).then(() => {
      if (!$('screen-login').hidden && !$('error').hidden) {
        pinField.focus();
      }
    });
  }

  function onSignup(event) {
    event.preventDefault();
    clearMessages();
    const form = event.currentTarget;
    const usernameField = $('signup-username');
    const emailField = $('signup-email');
    const username = usernameField.value.trim();
    const email = emailField.value.trim();
    if (!username) {
      showError('Choose a username.', '', usernameField);
      return;
    }
    if (!/^[^@\s]+@[^@\s]+$/.test(email)) {
      showError('Enter a valid e-mail address.', '', emailField);
      return;
    }

    return submit(form, async () => {
      await api('sign-up', { username, email });
      state.pending = { mode: 'activate-user', username, email };
      goConfirm();
    });
  }

  function onAddDevice(event) {
    event.preventDefault();
    clearMessages();
    const form = event.currentTarget;
    const usernameField = $('add-device-username');
    const nameField = $('add-device-name');
    const username = usernameField.value.trim();
    const deviceName = nameField.value.trim();
    if (!username) {
      showError('Enter your username.', '', usernameField);
      return;
    }
    if (!deviceName) {
      showError('Give this device a name.', '', nameField);
      return;
    }

    return submit(form, async () => {
      const answer = await api('add-device', { username, deviceName });
      if (typeof answer.deviceUuid !== 'string' || !answer.deviceUuid) {
        throw new PageError('The server did not name the new device. Try again.');
      }
      state.pending = { mode: 'activate-device', username, deviceUuid: answer.deviceUuid };
      goConfirm();
    });
  }

  function onForgot(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const record = state.pending && findDevice(state.pending.username);
    if (!record) {
      goHome();
      return;
    }

    return submit(form, async () => {
      await api('forgot-pin', { username: record.username, deviceUuid: record.deviceUuid });
      state.pending = { mode: 'reset-pin', username: record.username };
      goConfirm();
    });
  }

  function onConfirm(event) {
    event.preventDefault();
    clearMessages();
    const form = event.currentTarget;
    const pending = state.pending;
    if (!pending) {
      goHome();
      return;
    }
    const tokenField = $('confirm-token');
    const pinField = $('confirm-pin');
    const repeatField = $('confirm-pin2');
    const nameField = $('confirm-device-name');
    const token = tokenField.value.replace(/[\s-]/g, '');
    const pin = pinField.value;
    if (!token) {
      showError('Enter the code from the e-mail.', '', tokenField);
      return;
    }
    if (!PIN_RULE.test(pin)) {
      showError('The PIN must be 4 to 12 digits.', '', pinField);
      return;
    }
    if (pin !== repeatField.value) {
      repeatField.value = '';
      showError('The two PINs differ. Type the same PIN twice.', '', repeatField);
      return;
    }
    const deviceName = nameField.value.trim() || defaultDeviceName();

    return submit(form, async () => {
      const { record, answer } = await confirmStep(pending, token, pin, deviceName);
      pinField.value = '';
      repeatField.value = '';
      finish(record, answer);
    });
  }

  /** The API call of the confirm screen; the salt is new except for a PIN reset. */
  async function confirmStep(pending, token, pin, deviceName) {
    if (pending.mode === 'reset-pin') {
      const known = findDevice(pending.username);
      if (!known) {
        throw new PageError('This browser no longer knows that account. Start again.');
      }
      const answer = await api('reset-pin', {
        username: known.username,
        deviceUuid: known.deviceUuid,
        hashedPin: await hashPin(known.salt, pin),
        resetPinToken: token,
      });
      return { record: known, answer };
    }

    const salt = newSalt();
    const hashedPin = await hashPin(salt, pin);
    if (pending.mode === 'activate-user') {
      const answer = await api('activate-user', {
        username: pending.username,
        activationToken: token,
        hashedPin,
        deviceName,
      });
      return { record: { username: pending.username, deviceUuid: answer.deviceUuid, salt },
        answer };
    }
    const answer = await api('activate-device', {
      username: pending.username,
      deviceUuid: pending.deviceUuid,
      activationToken: token,
      hashedPin,
    });
    const deviceUuid = typeof answer.deviceUuid === 'string' && answer.deviceUuid
      ? answer.deviceUuid : pending.deviceUuid;
    return { record: { username: pending.username, deviceUuid, salt }, answer };
  }

  // == start ===================================================================================

  function wire() {
    $('login-form').addEventListener('submit', onLogin);
    $('signup-form').addEventListener('submit', onSignup);
    $('add-device-form').addEventListener('submit', onAddDevice);
    $('forgot-form').addEventListener('submit', onForgot);
    $('confirm-form').addEventListener('submit', onConfirm);

    $('go-forgot').addEventListener('click', () => {
      clearMessages();
      const username = $('login-user').value;
      state.pending = { mode: 'forgot', username };
      $('forgot-username').textContent = username;
      show('forgot');
    });
    $('go-other').addEventListener('click', () => goWelcome());
    $('forget-device').addEventListener('click', () => {
      const username = $('login-user').value;
      const question = `Remove ${username} from this browser? You will need a code from ` +
        'your e-mail to add this browser again.';
      if (username && window.confirm(question)) {
        try {
          forgetDevice(username);
        } catch {
          showError('This browser would not let the page change its storage.');
          return;
        }
        goHome();
      }
    });
    $('go-signup').addEventListener('click', () => {
      clearMessages();
      show('signup');
    });
    $('go-add-device').addEventListener('click', () => {
      clearMessages();
      if (!$('add-device-name').value) {
        $('add-device-name').value = defaultDeviceName();
      }
      show('add-device');
    });
    $('welcome-back').addEventListener('click', () => goHome());
    $('confirm-restart').addEventListener('click', () => goHome());
    for (const button of document.querySelectorAll('button.back')) {
      button.addEventListener('click', () => {
        const inForgot = Boolean(button.closest('#screen-forgot'));
        if (inForgot || knownDevices().length === 0) {
          goHome();
        } else {
          goWelcome();
        }
      });
    }

    // Coming back with the Back button after the redirect: the transaction is finished, so
    // ask the server again instead of showing a stale screen.
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) {
        location.reload();
      }
    });
  }

  async function start() {
    const query = new URLSearchParams(location.search);
    state.txid = query.get('htOidTxid') || '';
    state.nonce = query.get('nonce') || '';
    const path = location.pathname.endsWith('/') ? location.pathname : `${location.pathname}/`;
    state.apiBase = `${path}api/`;
    wire();

    if (!state.txid) {
      fatal('This page opens from an application\'s sign-in link.',
        'Go back to the application and choose to sign in.');
      return;
    }
    if (!cryptoWorks()) {
      fatal('This browser cannot protect your PIN on this connection.',
        'Open the page over https, or use a current browser.');
      return;
    }
    if (!storageWorks()) {
      fatal('This browser does not let the page keep its device key.',
        'Allow site data (local storage) for this site, or leave private browsing.');
      return;
    }

    try {
      const context = await api('context');
      if (typeof context.applicationUuid !== 'string' || !context.applicationUuid) {
        throw new PageError('The server did not name the application.');
      }
      state.context = context;
    } catch (error) {
      if (error instanceof PageError && error.code === CODE_DEAD_TRANSACTION) {
        fatal(error.message, 'Go back to the application and start signing in again.');
      } else {
        fatal(error instanceof PageError ? error.message : 'The page could not start.',
          'Reload the page to try again.');
      }
      return;
    }

    if (state.context.applicationName) {
      $('app-name').textContent = state.context.applicationName;
      $('app-line').hidden = false;
    }
    const hint = state.context.loginHint || query.get('login_hint') || '';
    goHome(hint);
  }

  start().catch(() => {
    fatal('The page could not start.', 'Reload the page to try again.');
  });
})();
