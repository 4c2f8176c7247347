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
  const MAX_MESSAGE_BYTES = 4000;
  const bytes = (s) => new TextEncoder().encode(s).length;
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const messages = $('messages');
  const conn = $('conn');
  const text = $('text');
  const send = $('send');
  const composer = $('composer');
  const older = $('older');

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

  // ---- the conversation as shown ----
  //
  // Every message from the server has a seq, rising within the room's epoch. The page keeps the
  // list in seq order whatever way a message came (live, replayed on resume, paged over REST),
  // shows each seq once, and remembers the newest seq it saw so a reconnect resumes from there.
  // A "generation" is one run of comparable seqs: it changes when the server says the room's
  // history was reset (new epoch, or seqs started again), so old and new seqs are never compared.
  let gen = 0;
  let epoch = null;      // the epoch of the current generation, once known
  let lastSeq = 0;       // newest seq seen in this generation (0: none yet)
  let oldestSeq = 0;     // oldest seq shown in this generation (0: none)
  const seen = new Set(); // `${gen}:${seq}` shown, and message ids without a seq

  // Starts a new generation: nothing shown so far compares with what comes next.
  function newGeneration(ep) {
    gen += 1;
    epoch = ep ?? null;
    lastSeq = 0;
    oldestSeq = 0;
    olderDone = false; // the new epoch's history is paged from its own start
  }

  function buildMessage(m, nick) {
    const sender = String(m.sender ?? '');
    const body = String(m.message ?? '');
    const li = document.createElement('li');
    if (m.type === 'ENTER' || m.type === 'QUIT' || m.type === 'SYSTEM') {
      li.className = 'notice';
      li.textContent = body || (m.type === 'ENTER' ? `${sender}님 등장!` : `${sender}님 퇴장`);
    } else {
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
    }
    li.dataset.type = String(m.type);
    if (m.id != null) li.dataset.id = String(m.id);
    return li;
  }

  // Returns whether `m` is new to the page (and marks it seen).
  function firstSight(m) {
    const key = Number.isSafeInteger(m.seq) ? `${gen}:${m.seq}` : (m.id != null ? `id:${m.id}` : null);
    if (key === null) return true;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  }

  // Puts `msgs` (ascending seq, all of this generation, none shown yet) in the list in seq order.
  // `older`: they come from paging back, so the view keeps its place instead of following them.
  function place(msgs, nick, { older = false } = {}) {
    const fresh = msgs.filter(firstSight);
    if (!fresh.length) return 0;
    const lis = fresh.map((m) => {
      const li = buildMessage(m, nick);
      if (Number.isSafeInteger(m.seq)) {
        li.dataset.seq = String(m.seq);
        li.dataset.gen = String(gen);
      }
      return li;
    });
    const top = fresh[0].seq;
    // The first shown message of this generation with a higher seq, if any: they go before it.
    let anchor = null;
    if (Number.isSafeInteger(top) && oldestSeq && top < lastSeq) {
      for (const li of messages.querySelectorAll(`li[data-gen="${gen}"]`)) {
        if (Number(li.dataset.seq) > top) { anchor = li; break; }
      }
    }
    const keepFromBottom = log.scrollHeight - log.scrollTop;
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
    if (anchor) anchor.before(...lis);
    else messages.append(...lis);
    if (older || (anchor && !atBottom)) log.scrollTop = log.scrollHeight - keepFromBottom;
    else if (atBottom) log.scrollTop = log.scrollHeight;
    for (const m of fresh) {
      if (!Number.isSafeInteger(m.seq)) continue;
      if (m.seq > lastSeq) lastSeq = m.seq;
      if (!oldestSeq || m.seq < oldestSeq) oldestSeq = m.seq;
    }
    updateOlder();
    return fresh.length;
  }

  // A message from the subscription (live or replayed). Returns nothing.
  // ---- who is here (GET /chat/room/{roomId}/members) ----

  const membersBox = $('members');
  let membersTimer = null;
  async function loadMembers() {
    try {
      const res = await fetch(`/chat/room/${encodeURIComponent(roomId)}/members`,
                              { headers: chatdAuth.headers({ Accept: 'application/json' }), cache: 'no-store' });
      if (!res.ok) return; // presence off (404) or unavailable: the box stays as it was
      const body = await res.json();
      $('member-count').textContent = String(body.count);
      $('member-list').replaceChildren(...body.members.slice().sort().map((name) => {
        const li = document.createElement('li');
        li.textContent = name;
        return li;
      }));
      membersBox.hidden = false;
    } catch { /* the next ENTER or QUIT tries again */ }
  }
  // ENTER and QUIT change who is here; a burst of them costs one request.
  function membersChanged() {
    if (membersTimer) return;
    membersTimer = setTimeout(() => { membersTimer = null; void loadMembers(); }, 200);
  }

  function receive(m, nick) {
    if (m.type === 'ENTER' || m.type === 'QUIT') membersChanged();
    if (typeof m.epoch === 'string' && m.epoch !== epoch) {
      // The first message, or the room's history was replaced under a live subscription.
      if (epoch !== null) newGeneration(m.epoch);
      else epoch = m.epoch;
    }
    place([m], nick);
  }

  // ---- older messages (REST) ----

  const OLDER_PAGE = 50;
  let olderDone = false;   // the server said nothing older is kept
  let olderBusy = false;

  function updateOlder() {
    older.hidden = !oldestSeq || olderDone || oldestSeq <= 1;
  }

  // Fetches up to `limit` messages of the room with seq below `before`. Resolves with
  // { msgs, epoch, firstSeq } or throws.
  async function fetchPage(before, limit) {
    const base = `/chat/room/${encodeURIComponent(roomId)}/messages?before=${before}`;
    const get = (url) => fetch(url, { headers: chatdAuth.headers({ Accept: 'application/json' }), cache: 'no-store' });
    let res = await get(`${base}&limit=${limit}`);
    // A limit above the server's --max-replay is refused: its default page size is not.
    if (res.status === 400) res = await get(base);
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    const msgs = await res.json();
    return { msgs: Array.isArray(msgs) ? msgs : [], epoch: res.headers.get('x-epoch'),
             firstSeq: Number(res.headers.get('x-first-seq') || 0) };
  }

  async function loadOlder(nick) {
    if (olderBusy || !oldestSeq) return;
    olderBusy = true;
    older.disabled = true;
    const g = gen;
    try {
      const page = await fetchPage(oldestSeq, OLDER_PAGE);
      if (g !== gen || (epoch && page.epoch && page.epoch !== epoch)) return; // history was reset meanwhile
      const msgs = page.msgs.filter((m) => Number.isSafeInteger(m.seq) && m.seq < oldestSeq);
      place(msgs, nick, { older: true });
      if (!msgs.length || (page.firstSeq && oldestSeq <= page.firstSeq)) olderDone = true;
    } catch (e) {
      notice(`이전 메시지를 불러오지 못했습니다: ${e.message}`, 'error');
    } finally {
      olderBusy = false;
      older.disabled = false;
      updateOlder();
    }
  }

  // ---- transport ----

  function socketFactory() {
    if (params.get('raw') === '1') {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      return () => new WebSocket(`${scheme}//${location.host}${chatdAuth.url(ENDPOINT)}`,
                                 ['v12.stomp', 'v11.stomp', 'v10.stomp']);
    }
    // Only the transports chatd serves, so SockJS never waits on eventsource, iframe or jsonp.
    const forced = params.get('transport');
    const options = { transports: SOCKJS_TRANSPORTS };
    if (forced) {
      if (SOCKJS_TRANSPORTS.includes(forced)) options.transports = [forced];
      else console.warn(`chatd: unknown transport "${forced}", using ${SOCKJS_TRANSPORTS.join(', ')}`);
    }
    // --auth jwt: the token rides on the URL (and in CONNECT), read afresh at each connect.
    return () => new SockJS(chatdAuth.url(ENDPOINT), null, options);
  }

  // ---- the conversation ----

  const HISTORY_ON_OPEN = 50; // messages shown on entering (SUBSCRIBE x-history)
  const GAP_PAGE = 100;       // messages per REST page when filling a gap the replay left
  const GAP_PAGES = 50;       // at most this many pages (5,000 messages) per gap

  // A SEND's x-client-id: unique per message, so a retry after a reconnect is published once.
  const pageId = (() => {
    const b = new Uint8Array(8);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  })();
  let sent = 0;
  const newClientId = () => `${pageId}-${++sent}`;

  // What a HISTORY notice (MESSAGE header x-history-status) means for the reader.
  function historyText(n) {
    if (n.status === 'reset') return '서버의 대화 기록이 초기화되어, 연결이 끊긴 동안의 메시지를 볼 수 없습니다.';
    if (n.status === 'unavailable') return '서버가 지난 메시지를 불러오지 못해, 연결이 끊긴 동안의 메시지가 빠졌을 수 있습니다.';
    if (n.reason === 'retention') return '연결이 끊긴 동안의 메시지 중 일부는 보관 기간이 지나 더 이상 없습니다.';
    return '연결이 끊긴 동안의 메시지 중 일부를 불러오지 못했습니다.';
  }

  function start(nick) {
    if (typeof StompJs === 'undefined' || typeof SockJS === 'undefined') {
      setState('error');
      notice('브라우저 라이브러리가 없습니다 (/assets/vendor/): 서버에서 `npm ci`를 실행하세요.', 'error');
      return;
    }
    let everConnected = false;
    let subscribed = false;  // the room was subscribed once: later subscriptions resume
    let leaving = false;
    const outbox = new Map(); // receipt id -> SEND not yet confirmed, sent again after a reconnect

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

    function transmit(frame) {
      const receipt = frame.headers.receipt;
      if (receipt) client.watchForReceipt(receipt, () => outbox.delete(receipt));
      client.publish(frame);
    }

    // Sends one chat message. Unless `once`, it is kept until its RECEIPT (or its error) comes
    // and sent again, with the same x-client-id, after a reconnect.
    function publish(type, message, { once = false } = {}) {
      const id = newClientId();
      const frame = {
        destination: '/pub/chat/message',
        headers: { 'content-type': 'application/json', 'x-client-id': id },
        body: JSON.stringify({ type, roomId, sender: nick, message }),
      };
      if (!once) {
        frame.headers.receipt = id;
        outbox.set(id, frame);
      }
      transmit(frame);
    }

    // The room's SUBSCRIBE headers: the last messages on entering; afterwards, everything after
    // the newest seq seen (in its epoch), so nothing said while away is missing.
    function roomHeaders() {
      if (!subscribed) return { 'x-history': String(HISTORY_ON_OPEN) };
      const h = { 'x-since-seq': String(lastSeq) };
      if (epoch) h['x-epoch'] = epoch;
      return h;
    }

    // Pages the messages between `since` (seen) and `from` (replayed) in over REST: the server
    // replays at most --max-replay messages, the older missed ones are still in its history.
    async function fillGap(since, from) {
      const g = gen;
      let before = from;
      for (let i = 0; i < GAP_PAGES && before > since + 1; i++) {
        let page;
        try {
          page = await fetchPage(before, GAP_PAGE);
        } catch {
          break;
        }
        if (g !== gen || (page.epoch && epoch && page.epoch !== epoch)) return;
        const msgs = page.msgs.filter((m) => Number.isSafeInteger(m.seq) && m.seq > since && m.seq < before);
        if (!msgs.length) return; // nothing more between them is kept
        place(msgs, nick);
        before = msgs[0].seq;
      }
      if (g === gen && before > since + 1) notice(historyText({ status: 'partial' }), 'error');
    }

    function onHistoryNotice(n) {
      if (n.status === 'reset') {
        newGeneration(typeof n.epoch === 'string' ? n.epoch : null);
        lastSeq = Math.max(0, Number(n.fromSeq) - 1) || 0;
      } else if (n.status === 'partial' && (n.reason === 'replay-limit' || n.reason === 'memory')) {
        // Not lost, only not replayed (too many, or the server short of memory for history):
        // fetch it instead of saying it is missing. A join cut short needs nothing: the older
        // ones are a "이전 메시지 보기" away.
        if (n.sinceSeq !== undefined) void fillGap(Number(n.sinceSeq) || 0, Number(n.fromSeq) || 0);
        return;
      }
      const li = notice(historyText(n), 'error');
      li.dataset.history = `${n.status}/${n.reason}`;
    }

    // One hook (stompjs keeps only the last one set): --auth jwt replaces a token near expiry
    // before each (re)connect, and CONNECT carries it as well as the URL.
    client.beforeConnect = async () => {
      setState(everConnected ? 'reconnecting' : 'connecting');
      if (await chatdAuth.needed()) await chatdAuth.login(nick).catch((e) => notice(`로그인 실패: ${e.message}`, 'error'));
      client.connectHeaders = chatdAuth.headers();
    };

    let roomSubscribes = 0;
    client.onConnect = () => {
      setState('connected');
      everConnected = true;
      // The room's SUBSCRIBE carries a receipt, so a refusal of it (the server's message engine
      // away) is told apart on the error queue, which is subscribed first to hear it.
      const roomReceipt = `room-${++roomSubscribes}`;
      client.subscribe('/user/queue/errors', (frame) => {
        let e;
        try { e = JSON.parse(frame.body); } catch { e = { error: frame.body }; }
        const receipt = frame.headers['receipt-id'] ?? e?.receipt;
        if (receipt === roomReceipt && e?.status === 503) {
          // Connected but not in the room for now: reconnect (with backoff) and subscribe again.
          notice(`오류: ${e?.error ?? frame.body}`, 'error');
          setTimeout(() => { if (!leaving && client.connected) client.forceDisconnect(); }, 1000);
          return;
        }
        if (receipt != null) outbox.delete(String(receipt)); // refused: sending again would not help
        notice(`오류: ${e?.error ?? frame.body}`, 'error');
      });
      client.subscribe(`/sub/chat/room/${roomId}`, (frame) => {
        let m;
        try { m = JSON.parse(frame.body); } catch { return; }
        if (!m || typeof m !== 'object') return;
        if (frame.headers['x-history-status']) onHistoryNotice(m);
        else receive(m, nick);
      }, { ...roomHeaders(), receipt: roomReceipt });
      subscribed = true;
      // Sends the connection may have lost, in their order; the server publishes each id once.
      for (const frame of outbox.values()) transmit(frame);
      // ENTER on every connect: it tells the server this connection is in the room. The server
      // announces only news, so a reconnect within --presence-grace shows nothing.
      publish('ENTER', '', { once: true });
      membersChanged();
    };

    client.onStompError = (frame) => {
      // A node going down for a restart says so: the page reconnects (to another node behind a
      // balancer) and resumes, so this is news, not an error.
      if (frame.headers.message === 'server shutting down') {
        notice('서버가 재시작합니다. 다시 연결합니다…');
        return;
      }
      notice(`서버 오류: ${frame.headers.message || frame.body || 'ERROR'}`, 'error');
    };

    client.onWebSocketClose = () => {
      if (leaving) return;
      setState(everConnected ? 'reconnecting' : 'connecting');
    };

    // The network went away (a tunnel, Wi-Fi to LTE): the socket is dead even if the browser
    // has not noticed yet; drop it now rather than after the heart-beat timeout, and resume.
    window.addEventListener('offline', () => {
      if (client.connected) client.forceDisconnect();
    });
    // Back online: connect now rather than when the backoff timer says.
    window.addEventListener('online', () => {
      if (leaving || client.connected) return;
      void client.deactivate({ force: true }).then(() => { if (!leaving) client.activate(); });
    });

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

    older.addEventListener('click', () => void loadOlder(nick));

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
      if (client.connected) publish('QUIT', '', { once: true });
      client.deactivate();
    });

    setState('connecting');
    client.activate();
    // For tests and the console.
    window.chatdRoom = { client, roomId, nick, outbox, get lastSeq() { return lastSeq; }, get epoch() { return epoch; } };
  }

  async function loadRoom() {
    try {
      const res = await fetch(`/chat/room/${encodeURIComponent(roomId)}`,
                              { headers: chatdAuth.headers({ Accept: 'application/json' }), cache: 'no-store' });
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
        const checked = chatdNames.check(input.value);
        if (checked.problem) {
          input.setCustomValidity(checked.problem);
          input.reportValidity();
          return;
        }
        const nick = checked.name;
        saveNick(nick);
        form.hidden = true;
        composer.hidden = false;
        resolve(nick);
      });
    });
  }

  (async () => {
    setState('idle');
    // --auth jwt: log in as the nickname before anything asks the server (auth.js); the
    // name shown is the token's.
    const jwt = await chatdAuth.needed().catch(() => false);
    if (!jwt && !(await loadRoom())) return;
    // A stored name the server would refuse (another page's rules, an older version) is asked
    // for again: kept, it would fail every send with no way to change it here.
    let nick = chatdNames.check(readNick()).name || (await askNick());
    if (jwt) {
      try {
        nick = (await chatdAuth.login(nick)).name;
      } catch (e) {
        notice(`로그인 실패: ${e.message}`, 'error');
        return;
      }
      if (!(await loadRoom())) return;
    }
    start(nick);
    text.focus();
  })();
})();
