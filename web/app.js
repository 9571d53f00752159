// The Hatchway web page (docs/web.md): the Containers a user may see, a
// terminal that survives reloads and router restarts, live logs, watching
// and replaying terminals. Every request is same-origin and carries the
// router's own session cookie, never a Kubernetes token.
'use strict';

const $ = (id) => document.getElementById(id);
const api = '/v1/namespaces/';
const sections = ['login', 'containers', 'view'];
let current = null; // what the view shows; closed when the route changes

function show(which) {
  for (const s of sections) $(s).hidden = s !== which;
}

function status(text) {
  $('status').textContent = text;
}

async function get(path, options = {}) {
  const response = await fetch(path, { credentials: 'same-origin', ...options });
  if (response.status === 401) {
    show('login');
    throw new Error('not logged in');
  }
  return response;
}

async function refusal(response) {
  return `${response.status}: ${(await response.text()).trim()}`;
}

function age(since) {
  const seconds = Math.max(0, (Date.now() - Date.parse(since)) / 1000);
  if (seconds < 120) return `${Math.floor(seconds)}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

function link(text, href) {
  const a = document.createElement('a');
  a.textContent = text;
  a.href = href;
  return a;
}

function cell(row, content) {
  const td = row.insertCell();
  if (content instanceof Node) td.append(content);
  else td.textContent = content ?? '';
  return td;
}

// Routes (the hash, so a reload comes back to the same view):
//   #/ns/NS                              the Containers of NS
//   #/ns/NS/c/NAME/terminal[/LOGIN]      a terminal (as LOGIN)
//   #/ns/NS/c/NAME/logs[/FILE]           logs, followed
//   #/ns/NS/c/NAME/watch/ID              a live terminal, read-only
//   #/ns/NS/c/NAME/replay/ID             a recorded terminal
function route() {
  if (current) current.close();
  current = null;
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  if (parts[0] === 'ns' && parts[2] === 'c' && parts[3]) {
    return openView(parts[1], parts[3], parts[4] || 'terminal', parts[5]);
  }
  const namespace = parts[0] === 'ns' && parts[1] ? parts[1] : localStorage.getItem('hatchway-namespace') || 'default';
  return listContainers(namespace);
}

async function listContainers(namespace) {
  show('containers');
  localStorage.setItem('hatchway-namespace', namespace);
  $('namespace').value = namespace;
  const body = $('list').tBodies[0];
  body.replaceChildren();
  $('list-note').textContent = 'Loading…';
  const response = await get(`/ui/api/containers?namespace=${encodeURIComponent(namespace)}`);
  if (!response.ok) {
    $('list-note').textContent = await refusal(response);
    return;
  }
  const { containers } = await response.json();
  $('list-note').textContent = containers.length ? '' : `No Containers you may see in ${namespace}.`;
  for (const c of containers) {
    const row = body.insertRow();
    row.dataset.name = c.name;
    cell(row, c.name);
    cell(row, c.phase);
    cell(row, c.created ? age(c.created) : '');
    cell(row, c.exitCode ?? '');
    const apps = cell(row, '');
    for (const port of c.ports) {
      if (port.url) apps.append(link(port.label || String(port.port), port.url), ' ');
    }
    const actions = cell(row, '');
    const base = `#/ns/${encodeURIComponent(namespace)}/c/${encodeURIComponent(c.name)}`;
    if (c.actions.shell) actions.append(link('terminal', `${base}/terminal`), ' ');
    if (c.actions.shell && c.runsAsRoot) {
      const as = link('as user…', '#');
      as.title = 'a terminal as another user of the container';
      as.onclick = (e) => {
        e.preventDefault();
        const user = prompt('Log in as (a user in the container):');
        if (user) location.hash = `${base}/terminal/${encodeURIComponent(user)}`;
      };
      actions.append(as, ' ');
    }
    if (c.actions.logs) actions.append(link('logs', `${base}/logs`));
  }
}

function openView(namespace, name, what, arg) {
  show('view');
  $('back').href = `#/ns/${encodeURIComponent(namespace)}`;
  $('view-title').textContent = `${namespace}/${name}: ${what}${arg ? ' ' + arg : ''}`;
  $('terminal').replaceChildren();
  $('logs').hidden = true;
  $('terminals').hidden = true;
  status('');
  const container = { namespace, name, path: `${api}${encodeURIComponent(namespace)}/containers/${encodeURIComponent(name)}` };
  if (what === 'terminal') current = terminal(container, { login: arg });
  else if (what === 'watch') current = terminal(container, { join: arg });
  else if (what === 'logs') current = logs(container, arg || 'stdout.txt');
  else if (what === 'replay') current = replay(container, arg);
  if (what === 'terminal' || what === 'watch') listTerminals(container);
}

function newTerminal() {
  const term = new Terminal({ cursorBlink: true, scrollback: 5000, fontFamily: 'monospace' });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open($('terminal'));
  fit.fit();
  const refit = () => fit.fit();
  window.addEventListener('resize', refit);
  // Tests (and the curious) read the screen through it.
  window.hatchwayTerminal = term;
  return { term, dispose: () => { window.removeEventListener('resize', refit); term.dispose(); } };
}

// A terminal over a WebSocket to the router: the router is the SSH client
// of the Container's gateway. The session id it sends is kept in this
// tab's sessionStorage: a reload, or a lost connection (a router replica
// restarted), comes back to the same shell and screen.
function terminal(container, { login, join }) {
  const { term, dispose } = newTerminal();
  const key = `hatchway-session:${container.namespace}/${container.name}/${login || ''}`;
  let ws = null;
  let closed = false;
  let attempts = 0;
  const encoder = new TextEncoder();
  const connect = () => {
    const query = new URLSearchParams({ cols: term.cols, rows: term.rows });
    if (join) query.set('join', join);
    else {
      const resume = sessionStorage.getItem(key);
      if (resume) query.set('resume', resume);
      if (login) query.set('login', login);
    }
    ws = new WebSocket(`wss://${location.host}${container.path}/terminal?${query}`);
    ws.binaryType = 'arraybuffer';
    let opened = false;
    ws.onopen = () => { opened = true; };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        term.write(new Uint8Array(event.data));
        return;
      }
      const message = JSON.parse(event.data);
      if (message.session !== undefined) {
        if (!join) sessionStorage.setItem(key, message.session);
        attempts = 0;
        status(join ? 'watching (read-only)' : 'connected');
      }
      if (message.exit !== undefined) {
        sessionStorage.removeItem(key);
        closed = true;
        status(`ended (${message.exit})`);
      }
      if (message.error) {
        status(message.error);
        if (message.gone) sessionStorage.removeItem(key);
        if (message.fatal) closed = true;
      }
    };
    ws.onclose = () => {
      if (closed) return;
      attempts += 1;
      if (!opened && attempts > 6) {
        status('cannot connect: the Container may have ended, or you may not open a shell in it');
        return;
      }
      status('connection lost, resuming…');
      setTimeout(connect, Math.min(2000, 100 * 2 ** attempts));
    };
  };
  term.onData((data) => {
    if (!join && ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.onResize(({ cols, rows }) => {
    if (!join && ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: [cols, rows] }));
  });
  connect();
  term.focus();
  return {
    close: () => {
      closed = true;
      if (ws) ws.close();
      dispose();
    },
  };
}

// Logs: the log tree's files (download links), one followed by asking for
// the bytes after those shown, once a second. The same URL serves saved
// logs after the Container ended.
function logs(container, file) {
  $('logs').hidden = false;
  const text = $('log-text');
  text.textContent = '';
  let offset = 0;
  let timer = null;
  let stopped = false;
  const files = async () => {
    const response = await get(`${container.path}/log/`);
    if (!response.ok) return;
    const list = $('log-files');
    list.replaceChildren('Files: ');
    for (const line of (await response.text()).split('\n')) {
      const [name, size] = line.split('\t');
      if (!name || name.endsWith('/')) continue;
      const show = link(name, `#/ns/${encodeURIComponent(container.namespace)}/c/${encodeURIComponent(container.name)}/logs/${encodeURIComponent(name)}`);
      const download = link('⇩', `${container.path}/log/${name.split('/').map(encodeURIComponent).join('/')}`);
      download.download = name;
      download.title = `download ${name} (${size} bytes)`;
      list.append(show, download, ' ');
    }
  };
  const poll = async () => {
    if (stopped) return;
    try {
      const response = await get(`${container.path}/log/${encodeURIComponent(file)}`, {
        headers: { Range: `bytes=${offset}-` },
      });
      if (response.status === 200 || response.status === 206) {
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (response.status === 200) text.textContent = '';
        offset = (response.status === 200 ? 0 : offset) + bytes.length;
        const atEnd = text.scrollTop + text.clientHeight >= text.scrollHeight - 4;
        text.append(new TextDecoder().decode(bytes));
        if (atEnd) text.scrollTop = text.scrollHeight;
        status(`following ${file} (${response.headers.get('x-hatchway-log-source') || 'live'})`);
      } else if (response.status !== 416) {
        status(await refusal(response));
      }
    } catch (error) {
      status(String(error));
    }
    timer = setTimeout(poll, 1000);
  };
  files();
  poll();
  return { close: () => { stopped = true; clearTimeout(timer); } };
}

// A recording, played at its pace (pauses cut to a second).
function replay(container, id) {
  const { term, dispose } = newTerminal();
  let stopped = false;
  (async () => {
    const response = await get(`${container.path}/log/sessions/${encodeURIComponent(id)}.cast`);
    if (!response.ok) {
      status(await refusal(response));
      return;
    }
    const [header, ...events] = (await response.text()).split('\n').filter((l) => l.trim());
    const { width, height } = JSON.parse(header);
    if (width && height) term.resize(width, height);
    status('replaying');
    let last = 0;
    for (const line of events) {
      if (stopped) return;
      const [at, code, data] = JSON.parse(line);
      const wait = Math.min(1, Math.max(0, at - last));
      last = at;
      if (wait > 0) await new Promise((r) => setTimeout(r, wait * 1000));
      if (code === 'o') term.write(data);
    }
    status('replayed');
  })();
  return { close: () => { stopped = true; dispose(); } };
}

// The Container's terminals: live ones to watch, recorded ones to replay.
async function listTerminals(container) {
  const response = await get(`${container.path}/sessions`);
  if (!response.ok) return;
  const { terminals = [] } = await response.json();
  const body = $('terminals').querySelector('tbody');
  body.replaceChildren();
  const base = `#/ns/${encodeURIComponent(container.namespace)}/c/${encodeURIComponent(container.name)}`;
  for (const t of terminals) {
    const row = body.insertRow();
    for (const value of [t.id, t.user, age(t.started), t.live ? 'live' : 'ended', t.recorded ?? '-', t.what]) cell(row, value);
    const actions = cell(row, '');
    if (t.live) actions.append(link('watch', `${base}/watch/${t.id}`), ' ');
    if (t.recorded !== undefined) actions.append(link('replay', `${base}/replay/${t.id}`));
  }
  $('terminals').hidden = terminals.length === 0;
}

async function start() {
  const params = new URLSearchParams(location.search);
  if (params.get('error')) $('login-error').textContent = params.get('error');
  $('namespace-form').onsubmit = (event) => {
    event.preventDefault();
    location.hash = `#/ns/${encodeURIComponent($('namespace').value)}`;
  };
  const response = await fetch('/ui/api/whoami', { credentials: 'same-origin' });
  if (!response.ok) {
    show('login');
    return;
  }
  const me = await response.json();
  $('who').textContent = me.user;
  $('logout').hidden = false;
  window.addEventListener('hashchange', route);
  route();
}

start();
