// Taskplane's dashboard: keeps the server-rendered page current and runs its actions.
// Pages refresh their `data-live` regions when /api/v1/events reports a change (at most twice
// a second), follow a task's log as it is written, and call the JSON API for actions after
// a confirmation. No libraries, no other origin, no inline script (the CSP forbids both).
'use strict';
(() => {
  const $ = (selector, root = document) => root.querySelector(selector);
  const EVENT_TYPES = ['created', 'waiting', 'queued', 'started', 'retrying', 'succeeded', 'failed',
    'cancelled', 'fired', 'workflow_succeeded', 'workflow_failed', 'workflow_cancelled'];
  const MIN_GAP_MS = 500;

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
    box.textContent = text;
    box.classList.toggle('bad', !!bad);
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { box.hidden = true; }, bad ? 8000 : 3000);
  }

  // ---- refreshing the live regions ----
  let busy = false, again = false, last = 0, timer = null;
  function schedule() {
    if (timer) return;
    timer = setTimeout(() => { timer = null; refresh(); }, Math.max(0, last + MIN_GAP_MS - Date.now()));
  }
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    last = Date.now();
    try {
      const response = await fetch(location.href, { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } });
      if (response.redirected && new URL(response.url).pathname === '/ui/login') { location.assign(response.url); return; }
      if (!response.ok && response.status >= 500) throw new Error(`status ${response.status}`);
      const fresh = new DOMParser().parseFromString(await response.text(), 'text/html');
      swap(fresh);
      setLost('refresh', false);
    } catch (error) {
      setLost('refresh', true);
    } finally {
      busy = false;
      if (again) { again = false; schedule(); }
    }
  }
  function swap(fresh) {
    const active = document.activeElement;
    for (const region of document.querySelectorAll('[data-live][id]')) {
      const next = fresh.getElementById(region.id);
      if (!next || next.innerHTML === region.innerHTML) continue;
      // Keep keyboard focus on the same control when its region is replaced.
      let key = null;
      if (active && region.contains(active)) key = active.getAttribute('data-url') || active.getAttribute('href');
      const adopted = document.importNode(next, true);
      region.replaceWith(adopted);
      if (key) {
        const again = [...adopted.querySelectorAll('[data-url],[href]')]
          .find((el) => el.getAttribute('data-url') === key || el.getAttribute('href') === key);
        if (again) again.focus();
      }
    }
  }

  // ---- events ----
  // One stream per visible page: a hidden tab (or a page left for another) lets its stream
  // go, so tabs do not use up the browser's six connections per host over HTTP/1.1.
  let source = null, retry = 500, lostTimer = null, reopenTimer = null;
  function listen(query) {
    if (source) return;
    source = new EventSource('/api/v1/events' + (query ? '?' + query : ''));
    source.onopen = () => {
      retry = 500;
      document.body.dataset.connected = '1';
      clearTimeout(lostTimer);
      lostTimer = null;
      if (lost.has('events')) { setLost('events', false); schedule(); }
    };
    for (const type of EVENT_TYPES) source.addEventListener(type, schedule);
    source.onerror = () => {
      delete document.body.dataset.connected;
      // Shown only when it lasts: a proxy's reconnect should not flash the banner.
      if (!lostTimer) lostTimer = setTimeout(() => setLost('events', true), 1500);
      if (source && source.readyState === EventSource.CLOSED) {
        // The browser gave up (an error status): open a new stream ourselves.
        source = null;
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
    delete document.body.dataset.connected;
  }

  // ---- actions ----
  function confirmed(text) {
    const dialog = $('#confirm');
    if (!dialog || !dialog.showModal) return Promise.resolve(window.confirm(text));
    $('#confirm-text').textContent = text;
    dialog.returnValue = '';
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
      dialog.showModal();
    });
  }
  async function call(url, body) {
    const init = { method: 'POST', credentials: 'same-origin', headers: { Accept: 'application/json' } };
    if (body != null) { init.headers['Content-Type'] = 'application/json'; init.body = body; }
    const response = await fetch(url, init);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!response.ok) {
      throw new Error((data && data.error && data.error.message) || `${response.status} ${response.statusText}`);
    }
    return data;
  }
  document.addEventListener('click', async (event) => {
    const button = event.target.closest('button.act');
    if (button) {
      event.preventDefault();
      if (!(await confirmed(button.dataset.confirm))) return;
      button.disabled = true;
      try {
        const data = await call(button.dataset.url, button.dataset.body);
        const count = data && typeof data.count === 'number' ? ` (${data.count})` : '';
        toast(`${button.textContent.trim()}: done${count}`);
        if (button.dataset.then) location.assign(button.dataset.then); else refresh();
      } catch (error) {
        toast(`${button.textContent.trim()} failed: ${error.message}`, true);
      } finally {
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
    if (!box) { toast(text, true); return; }
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
      try {
        const created = await call('/api/v1/tasks', JSON.stringify(task));
        location.assign(`/ui/tasks/${created.id}`);
      } catch (e) {
        showError(error, e.message);
      }
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
  function appendLine(pre, line, state) {
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    const placeholder = $('.placeholder', pre);
    if (placeholder) placeholder.remove();
    if (line.attempt !== state.attempt) {
      const rule = document.createElement('span');
      rule.className = 'attempt';
      rule.textContent = `── attempt ${line.attempt} ──\n`;
      pre.append(rule);
      state.attempt = line.attempt;
    }
    const span = document.createElement('span');
    span.className = `ln s-${line.stream}`;
    span.textContent = line.line + '\n';
    pre.append(span);
    if (stick) pre.scrollTop = pre.scrollHeight;
  }
  let following = null;
  const logState = { after: 0, attempt: 0 };
  async function follow(pre) {
    if (following) return;
    const stop = new AbortController();
    following = stop;
    const state = logState;
    for (let tries = 0; !stop.signal.aborted; tries++) {
      try {
        const response = await fetch(`/api/v1/tasks/${pre.dataset.task}/logs?follow=true&after=${state.after}`,
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
            state.after = line.seq;
            appendLine(pre, line, state);
          }
        }
        following = null;
        return; // the task has finished and every line is out
      } catch (error) {
        if (stop.signal.aborted) return;
        if (tries > 0) setLost('log', true);
        await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** tries)));
      }
    }
  }

  // ---- start ----
  const body = document.body;
  const events = body.dataset.events;
  const start = () => { if (events !== undefined && !document.hidden) listen(events); };
  start();
  const every = Number(body.dataset.every || 0);
  if (every > 0) setInterval(() => { if (!document.hidden) schedule(); }, every);
  document.addEventListener('visibilitychange', () => {
    if (document.hidden) { unlisten(); return; }
    start();
    schedule();
  });
  const log = $('#log');
  if (log) {
    logState.after = Number(log.dataset.after || 0);
    logState.attempt = Number(log.dataset.attempt || 0);
    follow(log);
  }
  window.addEventListener('pagehide', () => {
    unlisten();
    if (following) { following.abort(); following = null; }
  });
  window.addEventListener('pageshow', (event) => {
    if (!event.persisted) return;
    start();
    schedule();
    if (log) follow(log);
  });
})();
