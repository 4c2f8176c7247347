// Room page (GET /chat/room/enter/{roomId}): STOMP over SockJS (default) or plain WebSocket.
//   ?transport=websocket|xhr-streaming|xhr-polling  forces one SockJS transport
//   ?raw=1                                           plain WebSocket to /ws-stomp, no SockJS
// Everything from the server is rendered with textContent: names and messages are never HTML.
'use strict';

(() => {
  const NICK_KEY = 'chatd.nickname';
  const ENDPOINT = '/ws-stomp';
  const SOCKJS_TRANSPORTS = ['websocket', 'xhr-streaming', 'xhr-polling'];
  // chatd's default limits, in UTF-8 bytes (a Korean syllable takes 3).
  const MAX_NICK_BYTES = 64;
  const MAX_MESSAGE_BYTES = 4000;
  const bytes = (s) => new TextEncoder().encode(s).length;
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const messages = $('messages');
  const conn = $('conn');
  const text = $('text');
  const send = $('send');
  const composer = $('composer');

  const params = new URLSearchParams(location.search);
  const roomId = (() => {
    const last = location.pathname.split('/').filter(Boolean).pop() || '';
    try { return decodeURIComponent(last); } catch { return last; }
  })();
  $('back').href = '/chat/room' + location.search;

  // ---- helpers ----

  function readNick() {
    try { return (localStorage.getItem(NICK_KEY) || '').trim(); } catch { return ''; }
  }
  function saveNick(v) {
    try { localStorage.setItem(NICK_KEY, v); } catch { /* private mode */ }
  }

  const STATE_TEXT = {
    idle: '대기',
    connecting: '연결 중',
    connected: '연결됨',
    reconnecting: '재연결 중',
    disconnected: '연결 끊김',
    error: '오류',
  };
  function setState(state, detail = '') {
    conn.dataset.state = state;
    conn.textContent = STATE_TEXT[state] + (detail ? ` ${detail}` : '');
    send.disabled = state !== 'connected';
  }

  // Keeps the view pinned to the newest message unless the reader scrolled up.
  function append(li) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    messages.append(li);
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function notice(textContent, kind = '') {
    const li = document.createElement('li');
    li.className = 'notice' + (kind ? ` ${kind}` : '');
    li.textContent = textContent;
    append(li);
    return li;
  }

  function clock(ts) {
    const d = new Date(typeof ts === 'number' ? ts : Date.now());
    return d.toLocaleTimeString('ko-KR', { hour: '2-digit', minute: '2-digit' });
  }

  const seen = new Set(); // message ids: a redelivered message is shown once

  function renderMessage(m, nick) {
    if (m.id != null) {
      if (seen.has(m.id)) return;
      seen.add(m.id);
    }
    const sender = String(m.sender ?? '');
    const body = String(m.message ?? '');
    let li;
    if (m.type === 'ENTER' || m.type === 'QUIT' || m.type === 'SYSTEM') {
      li = notice(body || (m.type === 'ENTER' ? `${sender}님 등장!` : `${sender}님 퇴장`));
    } else {
      li = document.createElement('li');
      li.className = 'msg' + (sender === nick ? ' mine' : '');
      const who = document.createElement('span');
      who.className = 'sender';
      who.textContent = sender;
      const bubble = document.createElement('div');
      bubble.className = 'bubble';
      const t = document.createElement('span');
      t.className = 'text';
      t.textContent = body;
      const time = document.createElement('time');
      time.className = 'time';
      time.textContent = clock(m.ts);
      if (typeof m.ts === 'number') time.dateTime = new Date(m.ts).toISOString();
      bubble.append(t, time);
      li.append(who, bubble);
      append(li);
    }
    li.dataset.type = String(m.type);
    if (m.seq != null) li.dataset.seq = String(m.seq);
    if (m.id != null) li.dataset.id = String(m.id);
  }

  // ---- transport ----

  function socketFactory() {
    if (params.get('raw') === '1') {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return () => new WebSocket(`${scheme}//${location.host}${ENDPOINT}`,
                                 ['v12.stomp', 'v11.stomp', 'v10.stomp']);
    }
    // Only the transports chatd serves, so SockJS never waits on eventsource, iframe or jsonp.
    const forced = params.get('transport');
    const options = { transports: SOCKJS_TRANSPORTS };
    if (forced) {
      if (SOCKJS_TRANSPORTS.includes(forced)) options.transports = [forced];
      else console.warn(`chatd: unknown transport "${forced}", using ${SOCKJS_TRANSPORTS.join(', ')}`);
    }
    return () => new SockJS(ENDPOINT, null, options);
  }

  // ---- the conversation ----

  function start(nick) {
    if (typeof StompJs === 'undefined' || typeof SockJS === 'undefined') {
      setState('error');
      notice('브라우저 라이브러리가 없습니다 (/assets/vendor/): 서버에서 `npm ci`를 실행하세요.', 'error');
      return;
    }
    let entered = false;     // ENTER is announced once per page, not on every reconnect
    let everConnected = false;
    let leaving = false;

    const client = new StompJs.Client({
      webSocketFactory: socketFactory(),
      reconnectDelay: 1000,
      maxReconnectDelay: 30000,
      reconnectTimeMode: StompJs.ReconnectionTimeMode.EXPONENTIAL,
      connectionTimeout: 10000,
      heartbeatIncoming: 10000,
      heartbeatOutgoing: 10000,
      debug: () => {},
    });

    function publish(type, message) {
      client.publish({
        destination: '/pub/chat/message',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ type, roomId, sender: nick, message }),
      });
    }

    client.beforeConnect = () => {
      setState(everConnected ? 'reconnecting' : 'connecting');
    };

    client.onConnect = () => {
      setState('connected');
      if (everConnected) notice('다시 연결되었습니다. 끊긴 동안의 메시지는 보이지 않을 수 있습니다.');
      everConnected = true;
      client.subscribe(`/sub/chat/room/${roomId}`, (frame) => {
        let m;
        try { m = JSON.parse(frame.body); } catch { return; }
        if (m && typeof m === 'object') renderMessage(m, nick);
      });
      client.subscribe('/user/queue/errors', (frame) => {
        let e;
        try { e = JSON.parse(frame.body); } catch { e = { error: frame.body }; }
        notice(`오류: ${e.error ?? frame.body}`, 'error');
      });
      if (!entered) {
        publish('ENTER', '');
        entered = true;
      }
    };

    client.onStompError = (frame) => {
      notice(`서버 오류: ${frame.headers.message || frame.body || 'ERROR'}`, 'error');
    };

    client.onWebSocketClose = () => {
      if (leaving) return;
      setState(everConnected ? 'reconnecting' : 'connecting');
    };

    composer.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const body = text.value.trim();
      if (!body || !client.connected) return;
      if (bytes(body) > MAX_MESSAGE_BYTES) {
        notice(`메시지가 너무 깁니다 (UTF-8 ${MAX_MESSAGE_BYTES}바이트까지).`, 'error');
        return;
      }
      publish('TALK', body);
      text.value = '';
      text.style.height = '';
      text.focus();
    });

    // Enter sends, Shift+Enter breaks the line; Enter that ends a Korean IME composition does not.
    text.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Enter' || ev.shiftKey || ev.isComposing || ev.keyCode === 229) return;
      ev.preventDefault();
      composer.requestSubmit();
    });
    text.addEventListener('input', () => {
      text.style.height = '';
      text.style.height = `${Math.min(text.scrollHeight, window.innerHeight * 0.3)}px`;
    });

    window.addEventListener('pagehide', () => {
      leaving = true;
      if (client.connected) publish('QUIT', '');
      client.deactivate();
    });

    setState('connecting');
    client.activate();
    window.chatdRoom = { client, roomId, nick }; // for tests and the console
  }

  async function loadRoom() {
    try {
      const res = await fetch(`/chat/room/${encodeURIComponent(roomId)}`,
                              { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (res.status === 404) {
        $('room-name').textContent = '없는 채팅방';
        notice('채팅방을 찾을 수 없습니다.', 'error');
        return false;
      }
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const room = await res.json();
      $('room-name').textContent = room.name;
      document.title = `${room.name} · chatd`;
      return true;
    } catch (e) {
      notice(`채팅방 정보를 불러오지 못했습니다: ${e.message}`, 'error');
      return true; // the room may still work; let the socket try
    }
  }

  function askNick() {
    return new Promise((resolve) => {
      const form = $('nick-form');
      const input = $('nick-input');
      input.addEventListener('input', () => input.setCustomValidity(''));
      form.hidden = false;
      composer.hidden = true;
      input.focus();
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const nick = input.value.trim();
        if (!nick) return;
        if (bytes(nick) > MAX_NICK_BYTES) {
          input.setCustomValidity(`UTF-8 ${MAX_NICK_BYTES}바이트까지`);
          input.reportValidity();
          return;
        }
        saveNick(nick);
        form.hidden = true;
        composer.hidden = false;
        resolve(nick);
      });
    });
  }

  (async () => {
    setState('idle');
    if (!(await loadRoom())) return;
    const nick = readNick() || (await askNick());
    start(nick);
    text.focus();
  })();
})();
