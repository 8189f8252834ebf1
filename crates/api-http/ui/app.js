// The operators' dashboard: one page that signs in through the API, routes by the URL's
// fragment, and stays live on the WebSocket. Every value from the server is put into the page
// as text (never as markup), and every list is paged by the server.
(() => {
  'use strict';

  const API = '/api/v1';
  const CHANNELS = ['agent_activity', 'task_activity', 'conflict_alerts', 'resource_activity',
    'workflow_activity', 'system_metrics'];
  const STORED = 'agent-platform.session';
  const PAGE = 25;
  const CHART_MINUTES = 30;

  // ---------------------------------------------------------------- the page's building blocks

  /** An element with attributes (`on…` are listeners) and children (strings become text). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'class') el.className = v;
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
    for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return el;
  }

  const badge = (status) => h('span', { class: `badge s-${status}` }, status);
  const short = (id) => (id ? String(id).slice(0, 8) : '');
  const chips = (list) => (list || []).map((c) => h('span', { class: 'chip' }, c));
  const json = (v) => h('pre', {}, JSON.stringify(v, null, 2));
  const agentLink = (id) => (id ? h('a', { href: `#/agents/${id}` }, short(id)) : h('span', { class: 'muted' }, '—'));
  const taskLink = (id, text) => (id ? h('a', { href: `#/tasks/${id}` }, text || short(id)) : '—');

  function ago(ts) {
    if (!ts) return h('span', { class: 'muted' }, '—');
    const t = new Date(ts);
    const secs = Math.round((Date.now() - t.getTime()) / 1000);
    const abs = Math.abs(secs);
    const text = abs < 60 ? `${abs} s` : abs < 3600 ? `${Math.round(abs / 60)} min` :
      abs < 86400 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`;
    return h('time', { datetime: ts, title: t.toLocaleString() }, secs >= 0 ? `${text} ago` : `in ${text}`);
  }

  function clock(ts) {
    return h('time', { datetime: ts, title: new Date(ts).toLocaleString() },
      new Date(ts).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false }));
  }

  function fields(pairs) {
    return h('dl', { class: 'fields' }, pairs.filter(Boolean).map(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h('p', { class: 'empty' }, empty);
    return h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows)));
  }

  /** A share as a bar; `capacity` bars turn red when full, progress bars do not. */
  function bar(used, total, text, capacity = true) {
    const share = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
    const inner = h('span', {});
    inner.style.width = `${(share * 100).toFixed(1)}%`;
    return h('div', { class: capacity && share >= 1 ? 'bar full' : 'bar', role: 'img', 'aria-label': text, title: text }, inner);
  }

  /** A Kubernetes-style quantity ("500m", "2Gi", 3) as a number; NaN when it is not one. */
  function quantity(v) {
    if (typeof v === 'number') return v;
    const m = /^([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)([a-zA-Z]{0,2})$/.exec(String(v).trim());
    if (!m) return NaN;
    const unit = { '': 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
      Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 }[m[2]];
    return unit === undefined ? NaN : parseFloat(m[1]) * unit;
  }

  let toastTimer = null;
  function toast(text, kind) {
    const el = document.getElementById('toast');
    el.textContent = text;
    el.className = kind === 'ok' ? 'toast ok' : 'toast';
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, kind === 'ok' ? 3000 : 8000);
  }

  // ---------------------------------------------------------------- the API

  class ApiError extends Error {
    constructor(status, body) {
      const detail = (body && typeof body.detail === 'string') ? body.detail :
        status === 0 ? 'The server cannot be reached.' : `The server answered ${status}.`;
      super(detail);
      this.status = status;
      this.detail = detail;
      this.errors = (body && Array.isArray(body.errors)) ? body.errors : [];
    }

    /** The detail and every field the server named. */
    get full() {
      const named = this.errors.map((e) => `${e.field}: ${e.message}`).join('; ');
      return named ? `${this.detail} (${named})` : this.detail;
    }
  }

  /** A request to the API; answers `{data, next}` (`next`: the cursor of the next page). */
  async function api(method, path, body, options = {}) {
    const token = options.token ?? session?.token;
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(API + path, { method, headers, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      throw new ApiError(0, null);
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { data = null; }
    if (!res.ok) {
      const error = new ApiError(res.status, data);
      if (res.status === 401 && !options.signingIn) signOut('Your session has ended: the credential expired or was revoked. Sign in again.');
      throw error;
    }
    return { data, next: nextCursor(res.headers.get('Link')) };
  }

  function nextCursor(link) {
    const m = link && /<([^>]+)>\s*;\s*rel="next"/.exec(link);
    if (!m) return null;
    return new URL(m[1], location.origin).searchParams.get('cursor');
  }

  const query = (params) => {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
    const text = q.toString();
    return text ? `?${text}` : '';
  };

  // ---------------------------------------------------------------- the session

  /** `{token, subject, role}`, kept for this browser tab only. */
  let session = null;
  let expiryTimer = null;
  const mayOperate = () => session && (session.role === 'operator' || session.role === 'admin');

  function loadSession() {
    try { return JSON.parse(sessionStorage.getItem(STORED)); } catch { return null; }
  }

  /** The credential's expiry, when it is a JWT that says so. */
  function tokenExpiry(token) {
    const parts = token.split('.');
    if (parts.length !== 3) return null;
    try {
      const claims = JSON.parse(atob(parts[1].replace(/-/g, '+').replace(/_/g, '/')));
      return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
    } catch { return null; }
  }

  /** Checks `token` with the server and starts the session, or throws why not. */
  async function begin(token) {
    const exp = tokenExpiry(token);
    if (exp !== null && exp <= Date.now()) throw new ApiError(401, { detail: 'This token has expired.' });
    const { data: me } = await api('GET', '/auth/me', undefined, { token, signingIn: true });
    if (me.role === 'agent') {
      throw new ApiError(403, { detail: 'This credential belongs to an agent. The dashboard needs a viewer, operator or admin credential.' });
    }
    session = { token, subject: me.subject, role: me.role };
    sessionStorage.setItem(STORED, JSON.stringify(session));
    clearTimeout(expiryTimer);
    const until = exp ?? (me.expires_at ? Date.parse(me.expires_at) : null);
    if (until !== null && Number.isFinite(until)) expireAt(until);
    document.getElementById('top').hidden = false;
    document.getElementById('who').textContent = `${me.subject} · ${me.role}`;
    await live.start();
    route().catch(failed);
  }

  /** Signs out when the credential expires. A timer waits at most about 24 days, so a longer
   * wait is taken in steps. */
  function expireAt(until) {
    clearTimeout(expiryTimer);
    const wait = until - Date.now();
    if (wait <= 0) { signOut('Your session expired. Sign in again.'); return; }
    expiryTimer = setTimeout(() => expireAt(until), Math.min(wait, 2 ** 31 - 1));
  }

  function signOut(message) {
    if (!session && !message) return;
    session = null;
    sessionStorage.removeItem(STORED);
    clearTimeout(expiryTimer);
    live.stop();
    leave();
    document.getElementById('top').hidden = true;
    signInPage(message);
  }

  function signInPage(message) {
    const main = document.getElementById('main');
    main.removeAttribute('aria-busy');
    const problem = h('p', { class: 'error', role: 'alert', id: 'signin-error' }, message || '');
    const attempt = async (form, token) => {
      const button = form.querySelector('button');
      button.disabled = true;
      problem.textContent = '';
      try {
        await begin(await token());
      } catch (e) {
        const why = e instanceof ApiError ? e : new ApiError(0, null);
        problem.textContent = why.status === 401 ? `Not signed in: ${why.detail}` : why.full;
      } finally {
        button.disabled = false;
      }
    };
    const keyForm = h('form', { id: 'key-form', onsubmit: (e) => {
      e.preventDefault();
      const key = keyForm.elements.key.value.trim();
      if (!key) { problem.textContent = 'Enter an API key.'; return; }
      attempt(keyForm, async () => key);
    } },
    h('label', {}, 'API key', h('input', { name: 'key', type: 'password', autocomplete: 'off', required: true })),
    h('button', { type: 'submit' }, 'Sign in with the key'));
    const userForm = h('form', { id: 'user-form', onsubmit: (e) => {
      e.preventDefault();
      attempt(userForm, async () => {
        const { data } = await api('POST', '/auth/login', {
          username: userForm.elements.username.value, password: userForm.elements.password.value,
        }, { token: '', signingIn: true });
        return data.access_token;
      });
    } },
    h('label', {}, 'Username', h('input', { name: 'username', autocomplete: 'username', required: true })),
    h('label', {}, 'Password', h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true })),
    h('button', { type: 'submit' }, 'Sign in'));
    main.replaceChildren(h('section', { class: 'signin panel' },
      h('h1', {}, 'Sign in to Agent Platform'), problem, keyForm,
      h('p', { class: 'or' }, 'or with a username and password'), userForm,
      h('p', { class: 'muted' }, 'The credential is kept for this browser tab only.')));
    keyForm.elements.key.focus();
  }

  // ---------------------------------------------------------------- the live stream

  function setLive(kind, text) {
    const el = document.getElementById('live');
    el.className = `live ${kind}`;
    el.textContent = text;
  }

  /** One WebSocket for the whole session: every channel, resumed with `since` after a drop. */
  const live = {
    ws: null,
    confirmed: false,
    restarted: false,
    lastSeq: null,
    attempt: 0,
    timer: null,
    running: false,
    listeners: new Set(),

    async start() {
      this.stop();
      this.running = true;
      // Start after the newest event there is, so a drop before any event still resumes.
      try {
        const { data } = await api('GET', '/dashboard/activity?limit=1');
        this.lastSeq = data.length ? data[0].seq : 0;
      } catch { this.lastSeq = null; }
      this.connect();
    },

    stop() {
      this.running = false;
      clearTimeout(this.timer);
      if (this.ws) { this.ws.onclose = null; this.ws.close(1000); }
      this.ws = null;
      this.attempt = 0;
      this.restarted = false;
      setLive('', 'offline');
    },

    connect() {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const id = `dashboard-${Math.random().toString(36).slice(2, 10)}`;
      const ws = new WebSocket(`${scheme}//${location.host}${API}/ws/${id}`);
      this.ws = ws;
      if (!this.attempt) setLive('', 'connecting…');
      this.confirmed = false;
      ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', token: session.token }));
      ws.onmessage = (m) => {
        let msg;
        try { msg = JSON.parse(m.data); } catch { return; }
        this.receive(msg);
      };
      ws.onclose = (e) => {
        this.ws = null;
        if (!this.running) return;
        // The server's own words for a credential that no longer holds; any other close (a
        // connection cap, a restart, a slow reader) is retried.
        if (e.code === 1008 && /^(invalid or expired credentials|credentials expired|credentials revoked)/.test(e.reason)) {
          signOut('Your session has ended: the credential expired or was revoked. Sign in again.');
          return;
        }
        this.attempt += 1;
        const delay = Math.min(8000, 400 * 2 ** (this.attempt - 1)) * (0.75 + Math.random() / 2);
        setLive('retry', `reconnecting (attempt ${this.attempt})…`);
        document.getElementById('live').title = e.reason || '';
        this.timer = setTimeout(() => this.connect(), delay);
      };
    },

    subscribe() {
      const subscribe = { type: 'subscribe', subscriptions: CHANNELS };
      if (this.lastSeq !== null) subscribe.since = this.lastSeq;
      this.ws.send(JSON.stringify(subscribe));
    },

    receive(msg) {
      if (msg.type === 'authenticated') {
        this.subscribe();
      } else if (msg.type === 'subscription_confirmed') {
        const resumed = this.attempt > 0;
        this.attempt = 0;
        this.confirmed = true;
        setLive('on', 'live');
        document.getElementById('live').title = this.lastSeq !== null ? `resumed after event ${this.lastSeq}` : '';
        if (this.restarted) {
          // The log began again (an embedded store restarted): what the page shows is redrawn.
          this.restarted = false;
          route().catch(failed);
        } else if (resumed) {
          this.emit({ type: 'reconnected' });
        }
      } else if (msg.type === 'error') {
        const detail = (msg.data && msg.data.detail) || '';
        const head = /is ahead of the newest event, seq (\d+)/.exec(detail);
        if (!this.confirmed && head) {
          this.lastSeq = Number(head[1]);
          this.restarted = true;
          this.subscribe();
        } else if (/no longer retained/.test(detail)) {
          toast('Some events are older than the server keeps; the page reloads what it shows.');
          route().catch(failed);
        } else {
          toast(`The live stream: ${detail}`);
        }
      } else if (msg.channel) {
        if (typeof msg.seq === 'number') {
          if (this.lastSeq !== null && msg.seq <= this.lastSeq) return;
          this.lastSeq = msg.seq;
        }
        this.emit(msg);
      }
    },

    emit(msg) {
      for (const listener of this.listeners) {
        try { listener(msg); } catch (e) { toast(`The page could not show an update: ${e.message}`); }
      }
    },
  };

  // ---------------------------------------------------------------- pages and routing

  /** What the page on screen holds: listeners and timers, released when it is left. */
  let view = null;

  function leave() {
    if (!view) return;
    view.alive = false;
    for (const release of view.releases) release();
    view = null;
  }

  function enter() {
    leave();
    const v = {
      alive: true,
      releases: [],
      /** `fn(event)` for each live event while this page is shown. */
      on(fn) {
        const listener = (e) => { if (v.alive) fn(e); };
        live.listeners.add(listener);
        v.releases.push(() => live.listeners.delete(listener));
      },
      /** Runs `load` again when an event matches, at most once a second. `load` is one the
       * page also calls itself, made `serial`, so an older reading never replaces a newer. */
      refreshOn(matches, load) {
        let last = 0;
        let timer = null;
        const schedule = () => {
          if (timer) return;
          timer = setTimeout(() => {
            timer = null;
            last = Date.now();
            load().catch(failed);
          }, Math.max(0, 1000 - (Date.now() - last)));
        };
        v.releases.push(() => clearTimeout(timer));
        v.on((e) => { if (e.type === 'reconnected' || matches(e)) schedule(); });
      },
      /** `fn` made to run one call at a time: a call made while one runs is made once after
       * it (the calls meanwhile share it), so what the page shows last is the newest reading. */
      serial(fn) {
        let running = null;
        let again = null;
        const run = () => {
          if (running) {
            if (!again) again = running.catch(() => {}).then(() => { again = null; return run(); });
            return again;
          }
          running = Promise.resolve().then(() => (v.alive ? fn() : undefined)).finally(() => { running = null; });
          return running;
        };
        return run;
      },
      every(ms, fn) {
        const t = setInterval(() => { if (v.alive) fn(); }, ms);
        v.releases.push(() => clearInterval(t));
      },
    };
    view = v;
    return v;
  }

  const ROUTES = [
    [/^$/, 'overview', () => overview()],
    [/^agents$/, 'agents', (m, q) => agentsPage(q)],
    [/^agents\/([0-9a-f-]{36})$/, 'agents', (m) => agentPage(m[1])],
    [/^tasks$/, 'tasks', (m, q) => tasksPage(q)],
    [/^tasks\/([0-9a-f-]{36})$/, 'tasks', (m) => taskPage(m[1])],
    [/^resources$/, 'resources', () => resourcesPage()],
    [/^conflicts$/, 'conflicts', (m, q) => conflictsPage(q)],
    [/^conflicts\/([0-9a-f-]{36})$/, 'conflicts', (m) => conflictPage(m[1])],
    [/^workflows$/, 'workflows', () => workflowsPage()],
    [/^workflows\/([0-9a-f-]{36})$/, 'workflows', (m) => workflowPage(m[1])],
    [/^workflows\/([0-9a-f-]{36})\/executions\/([0-9a-f-]{36})$/, 'workflows', (m) => executionPage(m[1], m[2])],
  ];

  async function route() {
    if (!session) return;
    const [path, search] = location.hash.replace(/^#\/?/, '').split('?');
    const params = new URLSearchParams(search || '');
    const found = ROUTES.find(([re]) => re.test(path));
    const main = document.getElementById('main');
    for (const a of document.querySelectorAll('nav a')) {
      if (found && a.dataset.page === found[1]) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    const current = enter();
    main.dataset.route = location.hash;
    delete main.dataset.failed;
    if (!found) {
      main.removeAttribute('aria-busy');
      main.replaceChildren(h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/' }, 'Go to the overview.')));
      return;
    }
    main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
    // Busy until the page has read what it shows (assistive technology, and tests, wait for it).
    main.setAttribute('aria-busy', 'true');
    const hash = location.hash;
    try {
      await found[2](found[0].exec(path), params);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      // Signed out, or the reader has moved on to another page: nothing to show here.
      if (e.status === 401 || view !== current) return;
      // The failed page's listeners go with it.
      const v = enter();
      main.dataset.failed = e.full;
      main.replaceChildren(h('h1', {}, e.status === 404 ? 'Not found' : 'Could not load this page'),
        h('p', { class: 'error', role: 'alert' }, e.full),
        h('button', { type: 'button', onclick: () => route().catch(failed) }, 'Try again'));
      // A server that could not be reached is tried again once the live stream is back.
      if (e.status === 0 || e.status >= 500) v.on((ev) => { if (ev.type === 'reconnected') route().catch(failed); });
    } finally {
      if (main.dataset.route === hash) main.removeAttribute('aria-busy');
    }
  }

  /** Puts a newly opened page on screen. */
  function show(...children) {
    const main = document.getElementById('main');
    main.replaceChildren(...children.flat().filter(Boolean));
  }

  /** What identifies a control across a redraw: its form field, action, row, link or label. */
  function keyOf(el) {
    const row = el.closest('[data-id], [data-step]');
    return [el.tagName, el.name || '', el.dataset.action || '', row ? (row.dataset.id || row.dataset.step) : '',
      el.getAttribute('href') || '', el.name ? '' : el.textContent.trim().slice(0, 40)].join('|');
  }

  /** Replaces `slot`'s contents with what is read anew. The control that had the keyboard's
   * focus keeps it, and what the reader typed into a form stays, when they are still there. */
  function fill(slot, ...children) {
    const active = document.activeElement;
    const focused = active && active !== document.body && slot.contains(active) ? keyOf(active) : null;
    const typed = new Map();
    for (const field of slot.querySelectorAll('input, select, textarea')) {
      if (field.name && field.type !== 'password') typed.set(keyOf(field), field.value);
    }
    slot.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
    for (const field of slot.querySelectorAll('input, select, textarea')) {
      const value = typed.get(keyOf(field));
      if (value !== undefined && [...(field.options || [{ value }])].some((o) => o.value === value)) field.value = value;
    }
    if (focused) {
      const again = [...slot.querySelectorAll('a, button, input, select, textarea')].find((el) => keyOf(el) === focused);
      if (again && !again.disabled) again.focus({ preventScroll: true });
    }
  }

  /** Runs an operator's action from `button`, then shows the outcome and `reload`s. */
  async function act(button, request, done, reload) {
    button.disabled = true;
    try {
      await request();
      toast(done, 'ok');
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      if (e.status !== 401) toast(`${button.textContent} failed: ${e.full}`);
    } finally {
      button.disabled = false;
    }
    if (view && view.alive) await reload().catch((e) => { if (e instanceof ApiError && e.status !== 401) toast(e.full); });
  }

  /** A list paged by the server: `load(cursor)` answers `{data, next}`. `refresh` reloads
   * the page shown; a page that cannot be read leaves the list as it was and says why. */
  function pager(load, render) {
    const slot = h('div', {});
    const nav = h('div', { class: 'pager' });
    const el = h('div', {}, slot, nav);
    let stack = [];
    let cursor = null;
    let asked = 0; // only the reading asked for last is shown
    let broken = false;
    const display = async (at, below) => {
      const mine = ++asked;
      const { data, next } = await load(at);
      if (mine !== asked) return;
      broken = false;
      cursor = at;
      stack = below;
      fill(slot, render(data));
      const prev = h('button', { type: 'button', class: 'quiet', disabled: !stack.length, onclick: () => turn(stack[stack.length - 1], stack.slice(0, -1)) }, '‹ Previous');
      const more = h('button', { type: 'button', class: 'quiet', disabled: !next, onclick: () => turn(next, [...stack, cursor]) }, 'Next ›');
      fill(nav, prev, `page ${stack.length + 1}`, more);
    };
    const turn = (at, below) => display(at, below).catch(failed);
    /** The first load: a list that cannot be read says so in its place. */
    const first = () => display(null, []).catch((e) => {
      if (!(e instanceof ApiError)) throw e;
      broken = true;
      if (e.status !== 401) fill(slot, h('p', { class: 'error', role: 'alert' }, e.full));
    });
    // A list the server refused (a bad filter) is not asked again for every event.
    return { el, first, refresh: () => (broken ? Promise.resolve() : display(cursor, stack)) };
  }

  /** Says why something the reader asked for failed (a `401` has signed them out already). */
  function failed(e) {
    if (!(e instanceof ApiError)) throw e;
    if (e.status !== 401) toast(e.full);
  }

  /** Filter controls that write the URL's query (so back and forward keep them). */
  function filters(base, params, controls) {
    const form = h('form', { class: 'filters', onsubmit: (e) => {
      e.preventDefault();
      // Every field goes into the address, empty ones too: an empty status means "any", not
      // the page's default.
      const q = new URLSearchParams();
      for (const [name] of controls) q.set(name, form.elements[name].value.trim());
      location.hash = `#/${base}?${q}`;
    } },
    controls.map(([name, label, options]) => h('label', {}, label, options ?
      h('select', { name }, h('option', { value: '' }, 'any'), options.map((o) => h('option', { value: o, selected: params.get(name) === o }, o))) :
      h('input', { name, value: params.get(name) || '', size: 14 }))),
    h('button', { type: 'submit' }, 'Filter'));
    for (const select of form.querySelectorAll('select')) select.addEventListener('change', () => form.requestSubmit());
    return form;
  }

  /** Task events that change what an agent holds, and so its load and the pools' allocations. */
  const HOLDING = ['task_assigned', 'task_completed', 'task_failed', 'task_retrying', 'task_cancelled', 'task_expired'];
  const TASK_STATUSES = ['pending', 'assigned', 'running', 'completed', 'failed', 'cancelled', 'expired'];
  const AGENT_STATUSES = ['idle', 'active', 'busy', 'draining', 'offline', 'suspended'];

  // ---------------------------------------------------------------- overview

  function describe(e) {
    const d = e.data || {};
    const name = d.title || d.name || d.step || '';
    const target = d.conflict_id ? h('a', { href: `#/conflicts/${d.conflict_id}` }, (d.conflict_type || short(d.conflict_id)).replace(/_/g, ' ')) :
      d.task_id ? taskLink(d.task_id, name || short(d.task_id)) :
      d.agent_id && e.channel === 'agent_activity' ? h('a', { href: `#/agents/${d.agent_id}` }, name || short(d.agent_id)) :
      d.execution_id && d.workflow_id ? h('a', { href: `#/workflows/${d.workflow_id}/executions/${d.execution_id}` }, name || short(d.execution_id)) :
      name;
    const extra = e.type === 'task_assigned' && d.assigned_agent ? [' → ', agentLink(d.assigned_agent)] :
      d.error ? [' — ', String(d.error)] : d.status && e.channel === 'agent_activity' ? [' ', badge(d.status)] : [];
    return [h('strong', {}, e.type.replace(/_/g, ' ')), ' ', target, extra];
  }

  function feedItem(e) {
    return h('li', { 'data-seq': e.seq, 'data-type': e.type }, clock(e.timestamp), h('span', {}, describe(e)));
  }

  /** Per-minute counts and times, from the activity already logged and then the live stream. */
  function minuteSeries() {
    const minute = (ts) => Math.floor(Date.parse(ts) / 60000) * 60;
    const buckets = new Map();
    let since = Infinity; // the oldest minute the backfill covers fully
    const bucket = (m) => {
      if (!buckets.has(m)) buckets.set(m, { submitted: 0, completed: 0, failed: 0, waits: [] });
      return buckets.get(m);
    };
    return {
      add(e) {
        const b = bucket(minute(e.timestamp));
        if (e.type === 'task_submitted') b.submitted += 1;
        else if (e.type === 'task_completed') b.completed += 1;
        else if (e.type === 'task_failed') b.failed += 1;
        else if (e.type === 'task_assigned' && e.data && e.data.attempt === 1 && e.data.submitted_at) {
          b.waits.push((Date.parse(e.timestamp) - Date.parse(e.data.submitted_at)) / 1000);
        }
      },
      coveredFrom(ts) { since = ts ? minute(ts) + 60 : -Infinity; },
      columns() {
        const now = Math.floor(Date.now() / 60000) * 60;
        const xs = []; const sub = []; const done = []; const fail = []; const p50 = []; const worst = [];
        for (let m = now - (CHART_MINUTES - 1) * 60; m <= now; m += 60) {
          xs.push(m);
          const b = buckets.get(m);
          const known = m >= since;
          sub.push(known ? (b ? b.submitted : 0) : null);
          done.push(known ? (b ? b.completed : 0) : null);
          fail.push(known ? (b ? b.failed : 0) : null);
          const waits = b ? [...b.waits].sort((a, c) => a - c) : [];
          p50.push(known && waits.length ? waits[Math.floor((waits.length - 1) / 2)] : null);
          worst.push(known && waits.length ? waits[waits.length - 1] : null);
        }
        return { xs, sub, done, fail, p50, worst };
      },
    };
  }

  function chart(slot, title, series, data) {
    if (typeof uPlot === 'undefined') { fill(slot, h('p', { class: 'muted' }, 'Charts are unavailable.')); return null; }
    const width = () => Math.max(280, slot.clientWidth - 8);
    const plot = new uPlot({
      title, width: width(), height: 200,
      series: [{}, ...series.map(([label, stroke]) => ({ label, stroke, width: 2, spanGaps: false, points: { size: 4 } }))],
      axes: [{}, { size: 50 }],
      // Always the last CHART_MINUTES, whatever the data covers.
      scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - CHART_MINUTES * 60, now]; } } },
    }, data, slot);
    const resize = new ResizeObserver(() => plot.setSize({ width: width(), height: 200 }));
    resize.observe(slot);
    view.releases.push(() => { resize.disconnect(); plot.destroy(); });
    return plot;
  }

  async function overview() {
    const v = view;
    const cards = h('div', { class: 'cards', id: 'summary' });
    const feed = h('ul', { class: 'feed', id: 'feed', 'aria-live': 'polite' });
    const rateSlot = h('div', { class: 'chart panel' });
    const depthSlot = h('div', { class: 'chart panel' });
    const waitSlot = h('div', { class: 'chart panel' });
    show(h('h1', {}, 'Overview'), cards,
      h('div', { class: 'cols' },
        h('section', {}, h('h2', {}, 'Throughput'), h('div', { class: 'charts' }, rateSlot, depthSlot, waitSlot)),
        h('section', {}, h('h2', {}, 'Live activity'), h('div', { class: 'panel' }, feed))));

    // Events that arrive while the page reads the log are kept, and counted after it.
    const early = [];
    let handle = (e) => early.push(e);
    v.on((e) => handle(e));

    const series = minuteSeries();
    const depth = { xs: [], pending: [], running: [] };
    const summary = async () => {
      const { data: sm } = await api('GET', '/dashboard/summary');
      const card = (label, big, rest) => h('div', { class: 'card' }, h('div', { class: 'label' }, label),
        h('div', { class: 'big' }, big), h('ul', {}, rest.map(([k, n]) => h('li', {}, `${k}: ${n}`))));
      fill(cards,
        card('Agents', sm.agents.total, [['idle', sm.agents.idle], ['active', sm.agents.active], ['busy', sm.agents.busy], ['draining', sm.agents.draining], ['offline', sm.agents.offline], ['suspended', sm.agents.suspended]]),
        card('Tasks pending', sm.tasks.pending, [['in progress', sm.tasks.in_progress], ['completed', sm.tasks.completed], ['failed', sm.tasks.failed], ['cancelled', sm.tasks.cancelled], ['expired', sm.tasks.expired], ['total', sm.tasks.total]]),
        card('Resource pools', sm.resources.total, [['available', sm.resources.available], ['in use', sm.resources.in_use], ['exhausted', sm.resources.exhausted], ['maintenance', sm.resources.maintenance]]),
        card('Open conflicts', sm.conflicts.open, [['resolved', sm.conflicts.resolved], ['dismissed', sm.conflicts.dismissed]]),
        card('Workflows', sm.workflows.total, [['running executions', sm.workflows.running_executions]]),
        card('Live connections', sm.websocket_connections, []));
      depth.xs.push(Date.parse(sm.timestamp) / 1000);
      depth.pending.push(sm.tasks.pending);
      depth.running.push(sm.tasks.in_progress);
      const keep = depth.xs.findIndex((x) => x >= Date.now() / 1000 - CHART_MINUTES * 60);
      if (keep > 0) for (const k of Object.keys(depth)) depth[k].splice(0, keep);
    };

    // The feed names the channel `type` and the event `event`, as the seed has it; the stream
    // names the event `type`.
    const { data: logged } = await api('GET', '/dashboard/activity?limit=1000');
    const recent = logged.map((e) => ({ ...e, type: e.event, channel: e.type }));
    await summary();
    if (!v.alive) return;
    let newest = recent.length ? recent[0].seq : 0;
    for (const e of recent) series.add(e);
    // Fewer than asked for means the log holds nothing older: the backfill covers everything.
    series.coveredFrom(recent.length === 1000 ? recent[recent.length - 1].timestamp : null);
    fill(feed, recent.slice(0, 50).map(feedItem));
    if (!recent.length) fill(feed, h('li', { class: 'muted' }, 'Nothing has happened yet.'));

    const cols = () => series.columns();
    let c = cols();
    const rate = chart(rateSlot, 'Tasks per minute', [['submitted', '#2f5bd3'], ['completed', '#1f8a4c'], ['failed', '#c0392b']], [c.xs, c.sub, c.done, c.fail]);
    const queue = chart(depthSlot, 'Queue depth', [['pending', '#b26b00'], ['in progress', '#2f5bd3']], [depth.xs, depth.pending, depth.running]);
    const wait = chart(waitSlot, 'Time to assignment (s)', [['median', '#2f5bd3'], ['slowest', '#8e44ad']], [c.xs, c.p50, c.worst]);
    let dirty = false;
    v.every(1000, () => {
      if (!dirty) return;
      dirty = false;
      c = cols();
      rate?.setData([c.xs, c.sub, c.done, c.fail]);
      wait?.setData([c.xs, c.p50, c.worst]);
    });
    v.every(60000, () => { dirty = true; });

    let summaryRunning = false;
    const arrived = [];
    handle = async (e) => {
      if (e.channel === 'system_metrics') {
        if (summaryRunning) return;
        summaryRunning = true;
        try {
          await summary();
          cards.classList.remove('stale');
          cards.removeAttribute('title');
          queue?.setData([depth.xs, depth.pending, depth.running]);
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          // Shown dimmed until the next reading succeeds.
          cards.classList.add('stale');
          cards.title = `Not current: ${err.detail}`;
        } finally { summaryRunning = false; }
        return;
      }
      if (typeof e.seq !== 'number' || e.seq <= newest) return;
      newest = e.seq;
      series.add(e);
      dirty = true;
      arrived.push(e);
      if (arrived.length > 50) arrived.shift();
    };
    // The feed is redrawn at most four times a second, with the newest 50, however fast
    // events come.
    v.every(250, () => {
      if (!arrived.length) return;
      if (feed.firstChild && feed.firstChild.classList.contains('muted')) feed.replaceChildren();
      feed.prepend(...arrived.splice(0).reverse().map(feedItem));
      while (feed.children.length > 50) feed.lastChild.remove();
    });
    for (const e of early.splice(0)) handle(e);
  }

  // ---------------------------------------------------------------- agents

  function agentRow(a) {
    return h('tr', { 'data-id': a.id },
      h('td', {}, h('a', { href: `#/agents/${a.id}` }, a.name)),
      h('td', {}, badge(a.status)),
      h('td', {}, chips(a.capabilities)),
      h('td', {}, h('div', { class: 'barline' }, `${a.current_tasks}/${a.max_concurrent_tasks}`,
        bar(a.current_tasks, a.max_concurrent_tasks, `${a.current_tasks} of ${a.max_concurrent_tasks} slots`), '')),
      h('td', {}, `${Math.round(a.reliability * 100)}%`),
      h('td', {}, ago(a.last_heartbeat)));
  }

  async function agentsPage(params) {
    const v = view;
    const list = pager(
      (cursor) => api('GET', `/agents${query({ status_filter: params.get('status_filter'), capability_filter: params.get('capability_filter'), limit: PAGE, cursor })}`),
      (agents) => table(['Name', 'Status', 'Capabilities', 'Load', 'Reliability', 'Last heartbeat'], agents.map(agentRow), 'No agents match.'));
    show(h('h1', {}, 'Agents'),
      filters('agents', params, [['status_filter', 'Status', AGENT_STATUSES], ['capability_filter', 'Capability']]),
      h('div', { id: 'agents' }, list.el));
    v.refreshOn((e) => e.channel === 'agent_activity' || HOLDING.includes(e.type), list.refresh);
    await list.first();
  }

  async function agentPage(id) {
    const v = view;
    const head = h('div', {});
    const perf = h('div', { class: 'panel' });
    let range = '1h';
    const tasks = pager((cursor) => api('GET', `/tasks${query({ agent_id: id, limit: PAGE, cursor })}`),
      (list) => table(['Task', 'Status', 'Priority', 'Attempt', 'Updated'], list.map(taskRow), 'This agent holds no tasks.'));
    const load = v.serial(async () => {
      const { data: a } = await api('GET', `/agents/${id}`);
      const { data: figures } = await api('GET', `/metrics/performance${query({ agent_id: id, time_range: range })}`);
      if (!v.alive) return;
      const actions = mayOperate() ? h('div', { class: 'actions' },
        ['idle', 'active', 'busy'].includes(a.status) && h('button', { type: 'button', 'data-action': 'drain', onclick: (e) => act(e.target, () => api('PATCH', `/agents/${id}`, { status: 'draining' }), 'The agent is draining: it finishes its tasks and takes no new ones.', load) }, 'Drain'),
        a.status !== 'suspended' && h('button', { type: 'button', class: 'danger', 'data-action': 'suspend', onclick: (e) => act(e.target, () => api('PATCH', `/agents/${id}`, { status: 'suspended' }), 'The agent is suspended.', load) }, 'Suspend'),
        (a.status === 'draining' || a.status === 'suspended') && h('button', { type: 'button', class: 'quiet', 'data-action': 'resume', onclick: (e) => act(e.target, () => api('PATCH', `/agents/${id}`, { status: 'idle' }), 'The agent takes work again.', load) }, 'Resume')) : null;
      fill(head, h('h1', {}, a.name, ' ', badge(a.status)), actions,
        h('div', { class: 'panel' }, fields([
          ['ID', a.id], ['Capabilities', chips(a.capabilities)],
          ['Load', h('div', { class: 'barline' }, `${a.current_tasks}/${a.max_concurrent_tasks}`, bar(a.current_tasks, a.max_concurrent_tasks, `${a.current_tasks} of ${a.max_concurrent_tasks} slots`), '')],
          ['Reliability', `${Math.round(a.reliability * 100)}%`], ['Resources', json(a.resources)],
          ['Last heartbeat', ago(a.last_heartbeat)], ['Registered', ago(a.created_at)],
          Object.keys(a.metadata || {}).length && ['Metadata', json(a.metadata)],
        ])));
      const f = (figures[0] || {}).metrics || {};
      const secs = (x) => (x === null || x === undefined ? '—' : `${x.toFixed(2)} s`);
      fill(perf, h('div', { class: 'filters' }, h('label', {}, 'Period', h('select', { name: 'range', onchange: (e) => { range = e.target.value; load().catch(failed); } },
        ['15m', '1h', '24h', '7d'].map((r) => h('option', { value: r, selected: r === range }, r))))),
      fields([
        ['Completed', f.tasks_completed], ['Failed', f.tasks_failed],
        ['Success rate', f.success_rate === null || f.success_rate === undefined ? '—' : `${Math.round(f.success_rate * 100)}%`],
        ['Duration (mean / p50 / p95)', `${secs(f.avg_duration_seconds)} / ${secs(f.p50_duration_seconds)} / ${secs(f.p95_duration_seconds)}`],
        ['Throughput', `${(f.throughput_per_minute || 0).toFixed(2)} per minute`],
        ['Utilization', `${Math.round((f.utilization || 0) * 100)}%`],
      ]));
      await tasks.refresh();
    });
    v.refreshOn((e) => JSON.stringify(e.data || {}).includes(id), load);
    await load();
    if (!v.alive) return;
    show(head, h('h2', {}, 'Performance'), perf, h('h2', {}, 'Tasks'), tasks.el);
  }

  // ---------------------------------------------------------------- tasks

  function taskRow(t) {
    return h('tr', { 'data-id': t.id },
      h('td', {}, taskLink(t.id, t.title)),
      h('td', {}, badge(t.status)),
      h('td', {}, t.priority),
      h('td', {}, `${t.attempt}/${t.max_attempts}`),
      h('td', {}, ago(t.updated_at)));
  }

  async function tasksPage(params) {
    const v = view;
    const list = pager(
      (cursor) => api('GET', `/tasks${query({
        status_filter: params.get('status_filter'), priority_filter: params.get('priority_filter'),
        capability_filter: params.get('capability_filter'), agent_id: params.get('agent_id'), limit: PAGE, cursor,
      })}`),
      (tasks) => table(['Title', 'Status', 'Priority', 'Agent', 'Attempt', 'Submitted', 'Waiting because'], tasks.map((t) => h('tr', { 'data-id': t.id },
        h('td', {}, taskLink(t.id, t.title)), h('td', {}, badge(t.status)), h('td', {}, t.priority),
        h('td', {}, agentLink(t.assigned_agent)), h('td', {}, `${t.attempt}/${t.max_attempts}`),
        h('td', {}, ago(t.created_at)), h('td', { class: 'muted' }, t.pending_reason || ''))), 'No tasks match.'));
    show(h('h1', {}, 'Tasks'),
      filters('tasks', params, [['status_filter', 'Status', TASK_STATUSES],
        ['priority_filter', 'Priority', ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10']],
        ['capability_filter', 'Capability'], ['agent_id', 'Agent ID']]),
      h('div', { id: 'tasks' }, list.el));
    v.refreshOn((e) => e.channel === 'task_activity', list.refresh);
    await list.first();
  }

  /** Each attempt of a task, from its history. */
  function attempts(history) {
    const byAttempt = new Map();
    for (const e of history) {
      const n = e.data && e.data.attempt;
      if (!n || e.type === 'task_submitted') continue;
      if (!byAttempt.has(n)) byAttempt.set(n, { n, agent: null, assigned: null, started: null, end: null, error: null });
      const a = byAttempt.get(n);
      if (e.type === 'task_assigned') { a.assigned = e.timestamp; a.agent = e.data.assigned_agent; }
      if (e.type === 'task_started') a.started = e.timestamp;
      if (['task_completed', 'task_failed', 'task_retrying', 'task_cancelled', 'task_expired'].includes(e.type)) {
        a.end = e.type.replace('task_', ''); a.error = e.data.error || null;
      }
    }
    return [...byAttempt.values()];
  }

  async function taskPage(id) {
    const v = view;
    const body = h('div', {});
    const load = v.serial(async () => {
      const [{ data: t }, { data: history }] = await Promise.all([api('GET', `/tasks/${id}`), api('GET', `/tasks/${id}/history`)]);
      if (!v.alive) return;
      const open = ['pending', 'assigned', 'running'].includes(t.status);
      const ended = ['failed', 'cancelled', 'expired'].includes(t.status);
      const actions = mayOperate() ? h('div', { class: 'actions' },
        open && h('button', { type: 'button', class: 'danger', 'data-action': 'cancel', onclick: (e) => act(e.target, () => api('POST', `/tasks/${id}/cancel`, {}), 'Cancellation requested.', load) }, 'Cancel task'),
        ended && h('button', { type: 'button', 'data-action': 'retry', onclick: (e) => act(e.target, () => api('POST', `/tasks/${id}/retry`, {}), 'The task is queued again.', load) }, 'Retry task')) : null;
      const progress = typeof t.progress === 'number' ? h('div', { class: 'barline' }, `${Math.round(t.progress * 100)}%`, bar(t.progress, 1, `${Math.round(t.progress * 100)}% done`, false), '') : null;
      fill(body,
        h('h1', {}, t.title, ' ', h('span', { id: 'task-status' }, badge(t.status))),
        actions,
        t.status === 'pending' && t.pending_reason ? h('p', { class: 'reason', id: 'pending-reason' }, `Waiting: ${t.pending_reason}`) : null,
        h('div', { class: 'cols' },
          h('div', {},
            h('div', { class: 'panel' }, fields([
              ['ID', t.id], t.description && ['Description', t.description], ['Priority', t.priority],
              ['Required capabilities', chips(t.required_capabilities)],
              ['Agent', agentLink(t.assigned_agent)], ['Attempt', `${t.attempt} of ${t.max_attempts}`],
              ['Lease', t.lease_expires_at ? ['expires ', ago(t.lease_expires_at), ` (${t.lease_seconds} s)`] : `${t.lease_seconds} s, not held`],
              progress && ['Progress', progress],
              ['Submitted', ago(t.created_at)], t.assigned_at && ['Assigned', ago(t.assigned_at)],
              t.started_at && ['Started', ago(t.started_at)], t.completed_at && ['Ended', ago(t.completed_at)],
              t.deadline && ['Deadline', ago(t.deadline)],
              t.execution_id && ['Workflow step', h('a', { href: `#/workflows/${t.workflow_id}/executions/${t.execution_id}` }, t.step || 'execution')],
              (t.resource_claims || []).length && ['Resource claims', json(t.resource_claims)],
              Object.keys(t.resources || {}).length && ['Resources', json(t.resources)],
              t.error && ['Error', h('span', { class: 'error' }, t.error)],
              t.result && ['Result', json(t.result)],
            ])),
            h('h2', {}, 'Attempts'),
            table(['Attempt', 'Agent', 'Assigned', 'Started', 'Outcome'], attempts(history).map((a) => h('tr', {},
              h('td', {}, a.n), h('td', {}, agentLink(a.agent)), h('td', {}, a.assigned ? clock(a.assigned) : '—'),
              h('td', {}, a.started ? clock(a.started) : '—'), h('td', {}, a.end ? [badge(a.end), a.error ? ` ${a.error}` : ''] : 'in progress'))),
            'Not assigned yet.')),
          h('section', {}, h('h2', {}, 'Timeline'), h('ol', { class: 'timeline', id: 'timeline' },
            history.map((e) => h('li', { 'data-type': e.type }, clock(e.timestamp), ' ', h('strong', {}, e.type.replace(/_/g, ' ')),
              e.data && e.data.assigned_agent && e.type === 'task_assigned' ? [' to ', agentLink(e.data.assigned_agent)] : '',
              e.data && e.data.error ? [' — ', e.data.error] : ''))))));
    });
    v.refreshOn((e) => e.data && e.data.task_id === id, load);
    await load();
    if (!v.alive) return;
    show(body);
  }

  // ---------------------------------------------------------------- resources

  async function resourcesPage() {
    const v = view;
    const open = new Set();
    const list = pager((cursor) => api('GET', `/resources${query({ limit: PAGE, cursor })}`), (pools) => {
      if (!pools.length) return h('p', { class: 'empty' }, 'No resource pools are registered.');
      return pools.map((p) => {
        const allocations = h('div', {});
        const showAllocations = async () => {
          const { data } = await api('GET', `/resources/${p.id}/allocations`);
          fill(allocations, table(['Task', 'Agent', 'Amount', 'Since'], data.map((a) => h('tr', {},
            h('td', {}, taskLink(a.task_id)), h('td', {}, agentLink(a.agent_id)),
            h('td', {}, Object.entries(a.amount).map(([k, n]) => h('span', { class: 'chip' }, `${k}: ${n}`))),
            h('td', {}, ago(a.allocated_at)))), 'Nothing is allocated from this pool.'));
        };
        if (open.has(p.id)) showAllocations().catch(failed);
        const toggle = h('button', { type: 'button', class: 'quiet', 'aria-expanded': open.has(p.id), onclick: async () => {
          if (open.has(p.id)) { open.delete(p.id); fill(allocations); toggle.setAttribute('aria-expanded', 'false'); return; }
          open.add(p.id);
          toggle.setAttribute('aria-expanded', 'true');
          await showAllocations().catch(failed);
        } }, 'Allocations');
        return h('section', { class: 'panel', 'data-id': p.id },
          h('h2', {}, p.name, ' ', badge(p.status), ' ', h('span', { class: 'muted' }, p.type)),
          Object.entries(p.capacity).map(([dim, cap]) => {
            const used = quantity(p.allocated[dim] ?? 0);
            const total = quantity(cap);
            const text = `${p.allocated[dim] ?? 0} of ${cap} allocated`;
            return h('div', { class: 'barline' }, dim, bar(used, total, text), text);
          }),
          h('div', { class: 'actions' }, toggle), allocations);
      });
    });
    show(h('h1', {}, 'Resources'), h('div', { id: 'resources' }, list.el));
    v.refreshOn((e) => e.channel === 'resource_activity' || HOLDING.includes(e.type), list.refresh);
    await list.first();
  }

  // ---------------------------------------------------------------- conflicts

  async function conflictsPage(params) {
    const v = view;
    if (!params.has('status_filter')) params.set('status_filter', 'open');
    const list = pager(
      (cursor) => api('GET', `/conflicts${query({ status_filter: params.get('status_filter'), severity_filter: params.get('severity_filter'), type_filter: params.get('type_filter'), limit: PAGE, cursor })}`),
      (conflicts) => table(['Conflict', 'Severity', 'Status', 'Source', 'Agents', 'Tasks', 'Opened'], conflicts.map((c) => h('tr', { 'data-id': c.id },
        h('td', {}, h('a', { href: `#/conflicts/${c.id}` }, c.conflict_type.replace(/_/g, ' ')), h('div', { class: 'muted' }, c.description)),
        h('td', {}, badge(c.severity)), h('td', {}, badge(c.status)), h('td', {}, c.source),
        h('td', {}, (c.involved_agents || []).map((a) => [agentLink(a), ' '])),
        h('td', {}, (c.involved_tasks || []).map((t) => [taskLink(t), ' '])),
        h('td', {}, ago(c.created_at)))), 'No conflicts match.'));
    show(h('h1', {}, 'Conflicts'),
      filters('conflicts', params, [['status_filter', 'Status', ['open', 'resolved', 'dismissed']],
        ['severity_filter', 'Severity', ['low', 'medium', 'high', 'critical']],
        ['type_filter', 'Type', ['resource_contention', 'task_assignment', 'state_inconsistency', 'goal_conflict', 'priority_dispute', 'communication_failure', 'performance_dispute', 'policy_violation', 'deadline_missed', 'lease_expired', 'capability_gap', 'other']]]),
      h('div', { id: 'conflicts' }, list.el));
    v.refreshOn((e) => e.channel === 'conflict_alerts', list.refresh);
    await list.first();
  }

  const STRATEGIES = ['manual', 'priority_based', 'performance_based', 'consensus', 'policy_enforcement', 'retry_with_backoff'];

  async function conflictPage(id) {
    const v = view;
    const body = h('div', {});
    const names = new Map();
    /** The names of the agents and tasks involved, read once each (at most 20). */
    const named = async (c) => {
      const wanted = [...(c.involved_agents || []).map((a) => ['agents', a]), ...(c.involved_tasks || []).map((t) => ['tasks', t])]
        .filter(([, x]) => !names.has(x)).slice(0, 20);
      await Promise.all(wanted.map(async ([kind, x]) => {
        try {
          const { data } = await api('GET', `/${kind}/${x}`);
          names.set(x, data.name || data.title);
        } catch (e) {
          if (!(e instanceof ApiError) || e.status === 401) throw e;
          names.set(x, short(x));
        }
      }));
    };
    const load = v.serial(async () => {
      const { data: c } = await api('GET', `/conflicts/${id}`);
      await named(c);
      if (!v.alive) return;
      let actions = null;
      if (mayOperate() && c.status === 'open') {
        const resolve = h('form', { class: 'actions', id: 'resolve-form', onsubmit: (e) => {
          e.preventDefault();
          const strategy = resolve.elements.strategy.value;
          const text = resolve.elements.resolution.value.trim();
          act(resolve.querySelector('button'), () => api('POST', `/conflicts/${id}/resolve`, text ? { strategy, resolution: text } : { strategy }), 'The conflict is resolved.', load);
        } },
        h('label', {}, 'Strategy', h('select', { name: 'strategy' }, STRATEGIES.map((x) => h('option', { value: x }, x.replace(/_/g, ' '))))),
        h('label', {}, 'Resolution', h('input', { name: 'resolution', size: 40, placeholder: 'what was decided (needed for manual)' })),
        h('button', { type: 'submit', 'data-action': 'resolve' }, 'Resolve'));
        const dismiss = h('form', { class: 'actions', id: 'dismiss-form', onsubmit: (e) => {
          e.preventDefault();
          act(dismiss.querySelector('button'), () => api('POST', `/conflicts/${id}/dismiss`, { reason: dismiss.elements.reason.value.trim() }), 'The conflict is dismissed.', load);
        } },
        h('label', {}, 'Reason', h('input', { name: 'reason', size: 40, required: true })),
        h('button', { type: 'submit', class: 'quiet', 'data-action': 'dismiss' }, 'Dismiss'));
        actions = h('div', { class: 'panel' }, h('h2', {}, 'Settle it'), resolve, dismiss);
      }
      fill(body,
        h('h1', {}, c.conflict_type.replace(/_/g, ' '), ' ', h('span', { id: 'conflict-status' }, badge(c.status)), ' ', badge(c.severity)),
        actions,
        h('div', { class: 'panel' }, fields([
          ['ID', c.id], ['Description', c.description], ['Source', c.source],
          ['Agents involved', (c.involved_agents || []).length ? c.involved_agents.map((a) => [h('a', { href: `#/agents/${a}` }, names.get(a) || short(a)), ' ']) : '—'],
          ['Tasks involved', (c.involved_tasks || []).length ? c.involved_tasks.map((t) => [taskLink(t, names.get(t)), ' ']) : '—'],
          c.resource_id && ['Resource', c.resource_id], ['Opened', ago(c.created_at)],
          c.resolved_at && ['Closed', ago(c.resolved_at)],
          c.resolution && ['Strategy', c.resolution.strategy ? c.resolution.strategy.replace(/_/g, ' ') : '—'],
          c.resolution && ['Outcome', c.resolution.outcome],
          c.resolution && ['Decided by', [c.resolution.decided_by, ' ', ago(c.resolution.decided_at)]],
          c.resolution && Object.keys(c.resolution.details || {}).length && ['Details', json(c.resolution.details)],
          Object.keys(c.metadata || {}).length && ['Metadata', json(c.metadata)],
        ])));
    });
    v.refreshOn((e) => e.channel === 'conflict_alerts' && JSON.stringify(e.data || {}).includes(id), load);
    await load();
    if (!v.alive) return;
    show(body);
  }

  // ---------------------------------------------------------------- workflows

  /** The steps as a graph: a column per depth, an arrow per dependency. */
  function graph(steps, states) {
    const implicit = steps.every((st) => !(st.depends_on || []).length);
    const deps = new Map(steps.map((st, i) => [st.name, implicit ? (i ? [steps[i - 1].name] : []) : st.depends_on]));
    const depth = new Map();
    const level = (name, seen = new Set()) => {
      if (depth.has(name)) return depth.get(name);
      if (seen.has(name)) return 0;
      seen.add(name);
      const d = Math.max(-1, ...(deps.get(name) || []).map((x) => level(x, seen))) + 1;
      depth.set(name, d);
      return d;
    };
    const W = 170; const H = 44; const GX = 60; const GY = 20;
    const rows = [];
    const at = new Map();
    for (const st of steps) {
      const d = level(st.name);
      rows[d] = (rows[d] || 0) + 1;
      at.set(st.name, { x: 16 + d * (W + GX), y: 16 + (rows[d] - 1) * (H + GY) });
    }
    const width = 32 + rows.length * (W + GX) - GX;
    const height = 32 + Math.max(...rows.filter(Boolean), 1) * (H + GY) - GY;
    const edges = [];
    for (const st of steps) {
      for (const d of deps.get(st.name) || []) {
        const a = at.get(d); const b = at.get(st.name);
        if (!a || !b) continue;
        const x1 = a.x + W; const y1 = a.y + H / 2; const x2 = b.x; const y2 = b.y + H / 2;
        edges.push(s('path', { class: 'edge', d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
      }
    }
    const nodes = steps.map((st) => {
      const p = at.get(st.name);
      const state = states && states.get(st.name);
      const status = state ? state.status : null;
      const label = st.name.length > 20 ? `${st.name.slice(0, 19)}…` : st.name;
      const node = s('g', { class: status ? `step st-${status}` : 'step', 'data-step': st.name, 'data-status': status || '' },
        s('title', {}, status ? `${st.name}: ${status}` : st.name),
        s('rect', { x: p.x, y: p.y, width: W, height: H, rx: 6 }),
        s('text', { x: p.x + 10, y: p.y + (status ? 18 : 27) }, label),
        status ? s('text', { x: p.x + 10, y: p.y + 35, class: 'muted' }, status) : null);
      if (state && state.task_id) {
        const link = s('a', { href: `#/tasks/${state.task_id}` }, node);
        return link;
      }
      return node;
    });
    // Drawn at its natural size, shrunk (never enlarged) to fit a narrow window.
    return s('svg', { class: 'dag', width, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': `Steps: ${steps.map((st) => st.name).join(', ')}` },
      s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#9aa5b8' }))),
      edges, nodes);
  }

  async function workflowsPage() {
    const v = view;
    const list = pager((cursor) => api('GET', `/workflows${query({ limit: PAGE, cursor })}`),
      (flows) => table(['Workflow', 'Steps', 'Created'], flows.map((w) => h('tr', { 'data-id': w.id },
        h('td', {}, h('a', { href: `#/workflows/${w.id}` }, w.name), w.description ? h('div', { class: 'muted' }, w.description) : null),
        h('td', {}, w.steps.length), h('td', {}, ago(w.created_at)))), 'No workflows are defined.'));
    show(h('h1', {}, 'Workflows'), h('div', { id: 'workflows' }, list.el));
    v.refreshOn((e) => e.type === 'workflow_created' || e.type === 'workflow_deleted', list.refresh);
    await list.first();
  }

  async function workflowPage(id) {
    const v = view;
    const { data: w } = await api('GET', `/workflows/${id}`);
    if (!v.alive) return;
    const executions = pager((cursor) => api('GET', `/workflows/${id}/executions${query({ limit: PAGE, cursor })}`),
      (list) => table(['Execution', 'Status', 'Started', 'Ended'], list.map((x) => h('tr', { 'data-id': x.execution_id },
        h('td', {}, h('a', { href: `#/workflows/${id}/executions/${x.execution_id}` }, short(x.execution_id))),
        h('td', {}, badge(x.status)), h('td', {}, ago(x.created_at)), h('td', {}, ago(x.completed_at)))), 'Not run yet.'));
    let run = null;
    if (mayOperate()) {
      const problem = h('p', { class: 'error', role: 'alert' });
      run = h('form', { class: 'panel', id: 'execute-form', onsubmit: async (e) => {
        e.preventDefault();
        let parameters;
        try {
          parameters = JSON.parse(run.elements.parameters.value || '{}');
          if (typeof parameters !== 'object' || parameters === null || Array.isArray(parameters)) throw new Error('not an object');
        } catch {
          problem.textContent = 'Parameters must be a JSON object, such as {"dataset": "q3"}.';
          return;
        }
        problem.textContent = '';
        const button = run.querySelector('button');
        button.disabled = true;
        try {
          const { data: x } = await api('POST', `/workflows/${id}/execute`, { parameters });
          location.hash = `#/workflows/${id}/executions/${x.execution_id}`;
        } catch (err) {
          if (!(err instanceof ApiError)) throw err;
          problem.textContent = err.full;
        } finally { button.disabled = false; }
      } },
      h('h2', {}, 'Run it'), problem,
      h('label', {}, 'Parameters (JSON)', h('textarea', { name: 'parameters', rows: 3, cols: 50 }, '{}')),
      h('div', { class: 'actions' }, h('button', { type: 'submit', 'data-action': 'execute' }, 'Execute')));
    }
    show(h('h1', {}, w.name), w.description ? h('p', {}, w.description) : null,
      graph(w.steps, null), run,
      h('h2', {}, 'Executions'), h('div', { id: 'executions' }, executions.el));
    v.refreshOn((e) => e.channel === 'workflow_activity' && e.data && e.data.workflow_id === id, executions.refresh);
    await executions.first();
  }

  async function executionPage(workflowId, id) {
    const v = view;
    const { data: w } = await api('GET', `/workflows/${workflowId}`);
    const body = h('div', {});
    const load = v.serial(async () => {
      const { data: x } = await api('GET', `/workflows/${workflowId}/executions/${id}`);
      if (!v.alive) return;
      const states = new Map(x.steps.map((st) => [st.name, st]));
      let actions = null;
      if (mayOperate()) {
        // Offered from the first step that failed, else the first cancelled.
        const from = (x.steps.find((st) => st.status === 'failed') || x.steps.find((st) => st.status === 'cancelled') || x.steps[0] || {}).name;
        const rerun = ['failed', 'cancelled'].includes(x.status) ? h('form', { class: 'actions', onsubmit: (e) => {
          e.preventDefault();
          act(rerun.querySelector('button'), () => api('POST', `/workflows/${workflowId}/executions/${id}/rerun`, { from_step: rerun.elements.step.value }), 'The execution runs again.', load);
        } },
        h('label', {}, 'From step', h('select', { name: 'step' }, x.steps.map((st) => h('option', { value: st.name, selected: st.name === from }, st.name)))),
        h('button', { type: 'submit', 'data-action': 'rerun' }, 'Rerun')) : null;
        actions = h('div', { class: 'actions' },
          ['pending', 'running'].includes(x.status) && h('button', { type: 'button', class: 'danger', 'data-action': 'cancel', onclick: (e) => act(e.target, () => api('POST', `/workflows/${workflowId}/executions/${id}/cancel`, {}), 'The execution is cancelled.', load) }, 'Cancel execution'),
          rerun);
      }
      fill(body,
        h('h1', {}, h('a', { href: `#/workflows/${workflowId}` }, w.name), ' · run ', short(id), ' ', h('span', { id: 'execution-status' }, badge(x.status))),
        actions,
        graph(w.steps, states),
        h('h2', {}, 'Steps'),
        table(['Step', 'Status', 'Task', 'Started', 'Ended', 'Result or error'], x.steps.map((st) => h('tr', { 'data-step': st.name },
          h('td', {}, st.name), h('td', {}, badge(st.status)), h('td', {}, taskLink(st.task_id)),
          h('td', {}, ago(st.started_at)), h('td', {}, ago(st.completed_at)),
          h('td', {}, st.error ? h('span', { class: 'error' }, st.error) : st.result ? json(st.result) : ''))), 'No steps.'),
        Object.keys(x.parameters || {}).length ? [h('h2', {}, 'Parameters'), json(x.parameters)] : null);
    });
    v.refreshOn((e) => e.data && e.data.execution_id === id, load);
    await load();
    if (!v.alive) return;
    show(body);
  }

  // ---------------------------------------------------------------- start

  document.getElementById('signout').addEventListener('click', () => signOut('You signed out.'));
  // The skip link moves the focus; it must not change the route.
  document.querySelector('.skip').addEventListener('click', (e) => {
    e.preventDefault();
    document.getElementById('main').focus();
  });
  window.addEventListener('hashchange', () => route().catch((e) => toast(e.message)));
  const stored = loadSession();
  if (stored && stored.token) {
    begin(stored.token).catch((e) => {
      session = null;
      sessionStorage.removeItem(STORED);
      signInPage(e instanceof ApiError && e.status === 401 ? 'Your session has ended: the credential expired or was revoked. Sign in again.' : (e.full || e.message));
    });
  } else {
    signInPage('');
  }
})();
