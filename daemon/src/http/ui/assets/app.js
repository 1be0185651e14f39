// Taskplane's dashboard: keeps the server-rendered page current and runs its actions.
// A page refreshes its `data-live` regions when /api/v1/events reports a change (the first
// change at once, then at most one refresh per gap), follows a task's log as it is written,
// and calls the JSON API for actions after a confirmation. No libraries, no other origin, no
// inline script (the Content-Security-Policy forbids both).
'use strict';
(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const EVENT_TYPES = ['created', 'waiting', 'queued', 'started', 'retrying', 'succeeded', 'failed',
    'cancelled', 'fired', 'workflow_succeeded', 'workflow_failed', 'workflow_cancelled'];
  const body = document.body;
  const GAP_MS = Number(body.dataset.gap || 500);

  // ---- feedback ----
  const banner = $('#banner');
  const lost = new Set();
  function setLost(what, isLost) {
    if (isLost) lost.add(what); else lost.delete(what);
    if (banner) banner.hidden = lost.size === 0;
  }
  let toastTimer = null;
  function toast(text, bad) {
    const box = $('#toast');
    if (!box) return;
    box.setAttribute('role', bad ? 'alert' : 'status');
    box.textContent = text;
    box.classList.toggle('bad', !!bad);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 3000);
  }

  // ---- refreshing the live regions ----
  let busy = false, again = false, lastEventRefresh = 0, timer = null;
  // For a change: at once after a quiet spell, else at the end of the gap.
  function schedule() {
    if (timer) return;
    const wait = Math.max(0, lastEventRefresh + GAP_MS - Date.now());
    timer = setTimeout(() => { timer = null; lastEventRefresh = Date.now(); refresh(); }, wait);
  }
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } });
      if (response.redirected && new URL(response.url).pathname === '/ui/login') { location.assign(response.url); return; }
      if (!response.ok && response.status >= 500) throw new Error(`status ${response.status}`);
      swap(new DOMParser().parseFromString(await response.text(), 'text/html'));
      setLost('refresh', false);
      resumeLog();
    } catch (error) {
      setLost('refresh', true);
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  // A region's markup without its relative times, which change every second.
  const timeless = (el) => el.innerHTML
    .replace(/<time\b[^>]*>[^<]*<\/time>/g, '<time>')
    .replace(/<span data-since="[^"]*">[^<]*<\/span>/g, '<span>');
  function swap(fresh) {
    const active = document.activeElement;
    for (const region of document.querySelectorAll('[data-live][id]')) {
      const next = fresh.getElementById(region.id);
      if (!next) continue;
      if (timeless(next) === timeless(region)) {
        // Only times moved, and the clock below keeps those: nothing to swap (selection and
        // scroll stay put).
        continue;
      }
      for (const name of ['data-finished']) {
        if (next.hasAttribute(name)) region.setAttribute(name, next.getAttribute(name)); else region.removeAttribute(name);
      }
      // Keep sideways scroll of wide tables and keyboard focus on the same control.
      const scrolls = [...region.querySelectorAll('.scroll')].map((el) => el.scrollLeft);
      let key = null;
      if (active && region.contains(active)) key = active.getAttribute('data-url') || active.getAttribute('href');
      region.replaceChildren(...[...next.childNodes].map((node) => document.importNode(node, true)));
      region.querySelectorAll('.scroll').forEach((el, i) => { if (scrolls[i]) el.scrollLeft = scrolls[i]; });
      if (key) {
        const same = [...region.querySelectorAll('[data-url],[href]')]
          .find((el) => el.getAttribute('data-url') === key || el.getAttribute('href') === key);
        if (same) same.focus();
      }
    }
  }

  // ---- the clock: relative times and running durations, every second ----
  // The server's clock is the reference (the page says what time it was rendered at).
  const skew = Number(body.dataset.now || Date.now()) - Date.now();
  function shortDuration(ms) {
    const s = Math.floor(ms / 1000);
    if (s === 0) return `${ms}ms`;
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  function tick() {
    const now = Date.now() + skew;
    for (const t of document.querySelectorAll('time[datetime]')) {
      const ms = now - Date.parse(t.getAttribute('datetime'));
      if (Number.isNaN(ms)) continue;
      // Under a second the server's own words stay: they are exact.
      if (Math.abs(ms) < 1000) continue;
      const text = shortDuration(Math.abs(ms));
      t.textContent = ms >= 0 ? `${text} ago` : `in ${text}`;
    }
    for (const el of document.querySelectorAll('[data-since]')) {
      const ms = now - Date.parse(el.dataset.since);
      if (!Number.isNaN(ms) && ms >= 1000) el.textContent = `${shortDuration(ms)}…`;
    }
  }
  setInterval(tick, 1000);

  // ---- events ----
  // One stream per visible page: a hidden tab (or a page left for another) lets its streams
  // go, so tabs do not use up the browser's six connections per host over HTTP/1.1.
  let source = null, retry = 500, lostTimer = null, reopenTimer = null;
  function listen(query) {
    if (source) return;
    source = new EventSource('/api/v1/events' + (query ? '?' + query : ''));
    source.onopen = () => {
      retry = 500;
      body.dataset.connected = '1';
      clearTimeout(lostTimer);
      lostTimer = null;
      setLost('events', false);
      // What changed before the stream opened is on no event: look once.
      schedule();
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, schedule);
    source.onerror = () => {
      delete body.dataset.connected;
      // Shown only when it lasts: a proxy's reconnect should not flash the banner.
      if (!lostTimer) lostTimer = setTimeout(() => setLost('events', true), 1500);
      if (source && source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status, e.g. an expired session): look at the page
        // (a lost session goes to sign-in) and open a new stream later.
        source = null;
        refresh();
        reopenTimer = setTimeout(() => listen(query), retry);
        retry = Math.min(retry * 2, 15000);
      }
    };
  }
  function unlisten() {
    clearTimeout(reopenTimer);
    clearTimeout(lostTimer);
    lostTimer = null;
    if (source) { source.close(); source = null; }
    delete body.dataset.connected;
  }

  // ---- actions ----
  const dialog = $('#confirm');
  function confirmed(text, danger, verb) {
    if (!dialog || !dialog.showModal) return Promise.resolve(window.confirm(text));
    $('#confirm-text').textContent = text;
    const ok = $('#confirm-ok');
    ok.textContent = verb || 'Confirm';
    ok.classList.toggle('danger', !!danger);
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
    });
  }
  async function call(url, payload) {
    const init = { method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (payload != null) { init.headers['Content-Type'] = 'application/json'; init.body = payload; }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
    }
    return data;
  }
  const inFlight = new Set();
  document.addEventListener('click', async (event) => {
    const button = event.target.closest('button.act');
    if (button) {
      event.preventDefault();
      const { url, then } = button.dataset;
      if (inFlight.has(url)) return;
      const label = button.textContent.trim();
      if (!(await confirmed(button.dataset.confirm, button.classList.contains('danger'), label))) return;
      if (inFlight.has(url)) return;
      inFlight.add(url);
      button.disabled = true;
      try {
        const data = await call(url, button.dataset.body);
        const count = data && typeof data.count === 'number' ? ` (${data.count})` : '';
        toast(`${label}: done${count}`);
        if (then) location.assign(then); else refresh();
      } catch (error) {
        toast(`${label} failed: ${error.message}`, true);
      } finally {
        inFlight.delete(url);
        button.disabled = false;
      }
      return;
    }
    if (event.target.closest('[data-logout]')) {
      try { await call('/ui/logout', null); } finally { location.assign('/ui/login'); }
    }
  });

  // ---- forms ----
  function showError(box, text) {
    if (!box) { if (text) toast(text, true); return; }
    box.textContent = text;
    box.hidden = !text;
  }
  const login = $('#login');
  if (login) {
    login.addEventListener('submit', async (event) => {
      event.preventDefault();
      const error = $('#login-error');
      try {
        await call('/ui/login', JSON.stringify({ token: login.elements.token.value }));
        const next = login.dataset.next || '/ui/';
        location.assign(next.startsWith('/ui/') ? next : '/ui/');
      } catch (e) {
        showError(error, e.message);
      }
    });
  }
  const submit = $('#submit-task');
  if (submit) {
    submit.addEventListener('submit', async (event) => {
      event.preventDefault();
      const f = submit.elements;
      const error = $('#submit-error');
      const button = $('button[type="submit"]', submit);
      if (button.disabled) return;
      const task = { kind: f.kind.value, queue: f.queue.value.trim() || undefined };
      try {
        task.payload = JSON.parse(f.payload.value.trim() || '{}');
      } catch (e) {
        showError(error, `The payload is not JSON: ${e.message}`);
        return;
      }
      const number = (input) => (input.value === '' ? undefined : Number(input.value));
      task.priority = number(f.priority);
      task.max_attempts = number(f.max_attempts);
      const delay = number(f.delay);
      if (delay) task.delay_ms = delay * 1000;
      const labels = {};
      for (const pair of f.labels.value.split(',').map((p) => p.trim()).filter(Boolean)) {
        const at = pair.indexOf('=');
        if (at < 1) { showError(error, `The label '${pair}' is not key=value`); return; }
        labels[pair.slice(0, at).trim()] = pair.slice(at + 1).trim();
      }
      if (Object.keys(labels).length) task.labels = labels;
      showError(error, '');
      const where = task.queue || 'default';
      if (!(await confirmed(`Submit a task of kind ${task.kind} to queue ${where}?`, false, 'Submit'))) return;
      // The button stays off until the answer: a double click makes one task.
      button.disabled = true;
      try {
        const created = await call('/api/v1/tasks', JSON.stringify(task));
        location.assign(`/ui/tasks/${created.id}`);
      } catch (e) {
        showError(error, e.message);
        button.disabled = false;
      }
    });
  }
  // Filters leave their empty fields out of the address.
  for (const form of document.querySelectorAll('form.filters')) {
    form.addEventListener('submit', () => {
      for (const field of form.elements) {
        if (field.name && field.value === '') field.disabled = true;
      }
      setTimeout(() => { for (const field of form.elements) field.disabled = false; }, 0);
    });
  }
  // `/` jumps to the search field, as on most consoles.
  document.addEventListener('keydown', (event) => {
    if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey) return;
    const tag = document.activeElement && document.activeElement.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT') return;
    const search = $('[data-search]');
    if (search) { event.preventDefault(); search.focus(); }
  });

  // ---- a task's log, as it is written ----
  const log = $('#log');
  // The log shows its end, and keeps showing it as lines come, until the reader scrolls up.
  if (log) log.scrollTop = log.scrollHeight;
  const logState = { after: Number(log ? log.dataset.after || 0 : 0), attempt: Number(log ? log.dataset.attempt || 0 : 0) };
  let following = null;
  function appendLine(line) {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const placeholder = $('.placeholder', log);
    if (placeholder) placeholder.remove();
    if (line.attempt !== logState.attempt) {
      const rule = document.createElement('span');
      rule.className = 'attempt';
      const at = new Date(line.ts).toISOString().slice(11, 19);
      rule.textContent = `── attempt ${line.attempt} · ${at} UTC ──\n`;
      log.append(rule);
      logState.attempt = line.attempt;
    }
    const span = document.createElement('span');
    span.className = `ln s-${line.stream}`;
    span.textContent = line.line + '\n';
    log.append(span);
    if (stick) log.scrollTop = log.scrollHeight;
  }
  // Follows the log until the task has finished and every line is out (the stream ends);
  // a task run again (retry) is followed again once the page sees it unfinished.
  async function follow() {
    if (following || !log || document.hidden) return;
    const stop = new AbortController();
    following = stop;
    for (let tries = 0; !stop.signal.aborted; tries++) {
      try {
        const response = await fetch(`/api/v1/tasks/${log.dataset.task}/logs?follow=true&after=${logState.after}`,
          { credentials: 'same-origin', headers: { Accept: 'application/x-ndjson' }, signal: stop.signal });
        if (!response.ok) throw new Error(`status ${response.status}`);
        setLost('log', false);
        tries = 0;
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let end;
          while ((end = buffer.indexOf('\n')) >= 0) {
            const text = buffer.slice(0, end);
            buffer = buffer.slice(end + 1);
            if (!text.trim()) continue;
            const line = JSON.parse(text);
            logState.after = line.seq;
            appendLine(line);
          }
        }
        break;
      } catch (error) {
        if (stop.signal.aborted) return;
        if (tries > 0) setLost('log', true);
        await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** tries)));
      }
    }
    if (following === stop) following = null;
    // The stream ended: the task finished (or a proxy closed it); the page looks again.
    schedule();
  }
  function stopLog() {
    if (following) { following.abort(); following = null; }
  }
  // After a refresh: an unfinished task whose log nobody follows is followed again.
  function resumeLog() {
    const head = $('#head');
    if (log && head && !head.hasAttribute('data-finished')) follow();
  }

  // ---- start ----
  const events = body.dataset.events;
  const start = () => {
    if (document.hidden) return;
    if (events !== undefined) listen(events);
    follow();
  };
  start();
  const every = Number(body.dataset.every || 0);
  if (every > 0) setInterval(() => { if (!document.hidden) refresh(); }, every);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) { unlisten(); stopLog(); return; }
    start();
    schedule();
  });
  window.addEventListener('pagehide', () => { unlisten(); stopLog(); });
  window.addEventListener('pageshow', (event) => { if (event.persisted) { start(); schedule(); } });
})();
