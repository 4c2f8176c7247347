// Room list page (GET /chat/room): list rooms, create one, keep a nickname, enter a room.
// Everything from the server is rendered with textContent: names are never parsed as HTML.
'use strict';

(() => {
  const NICK_KEY = 'chatd.nickname';
  // chatd's default limits, in UTF-8 bytes (a Korean syllable takes 3).
  const MAX_ROOM_NAME_BYTES = 100;
  const bytes = (s) => new TextEncoder().encode(s).length;
  const $ = (id) => document.getElementById(id);
  const nickname = $('nickname');
  const list = $('room-list');
  const empty = $('empty');
  const status = $('status');

  function say(text, isError = false) {
    status.textContent = text;
    status.classList.toggle('error', isError);
  }

  function readNick() {
    try { return localStorage.getItem(NICK_KEY) || ''; } catch { return ''; }
  }
  function saveNick(v) {
    try { localStorage.setItem(NICK_KEY, v); } catch { /* private mode: still works per page */ }
  }

  nickname.value = readNick();
  nickname.addEventListener('input', () => saveNick(nickname.value.trim()));
  // Only --auth jwt needs the list re-read for a new nickname (it signs in as it).
  nickname.addEventListener('change', async () => {
    if (chatdAuth.token() === null && await chatdAuth.needed()) load();
  });

  // Keeps ?transport= and ?raw= so a forced transport follows the user into the room.
  function enterHref(roomId) {
    return '/chat/room/enter/' + encodeURIComponent(roomId) + location.search;
  }

  // The list as last drawn; redrawing the same list would swap the links under a click in
  // progress (mousedown on the old link, mouseup on the new one: the browser drops the click).
  let drawn = null;

  function render(rooms) {
    const key = JSON.stringify(rooms.map((r) => [r.roomId, r.name]));
    if (key === drawn) return;
    drawn = key;
    list.replaceChildren();
    for (const room of rooms) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = enterHref(room.roomId);
      a.dataset.roomId = room.roomId;
      const name = document.createElement('span');
      name.className = 'room-name';
      name.textContent = room.name;
      const enter = document.createElement('span');
      enter.className = 'enter';
      enter.textContent = '입장 →';
      a.append(name, enter);
      li.append(a);
      list.append(li);
    }
    empty.hidden = rooms.length > 0;
  }

  async function errorText(res) {
    try {
      const body = await res.json();
      if (body && body.error) return `${res.status} ${body.error}`;
    } catch { /* not JSON */ }
    return `${res.status} ${res.statusText}`;
  }

  // --auth jwt: logs in as the nickname first (auth.js); false when there is none yet.
  async function signedIn() {
    if (!(await chatdAuth.needed())) return true;
    const nick = nickname.value.trim();
    if (!nick) {
      say('이 서버는 로그인이 필요합니다: 닉네임을 입력하세요.', true);
      return false;
    }
    await chatdAuth.login(nick);
    return true;
  }

  // Loads can overlap (a nickname's sign-in and a room just created each start one) and answer
  // out of order; only the newest may draw, or an older list would hide the room just made.
  let loads = 0;

  async function load() {
    const mine = ++loads;
    try {
      if (!(await signedIn())) return;
      const res = await fetch('/chat/rooms', { headers: chatdAuth.headers({ Accept: 'application/json' }), cache: 'no-store' });
      if (!res.ok) throw new Error(await errorText(res));
      const rooms = await res.json();
      if (mine !== loads) return;
      render(Array.isArray(rooms) ? rooms : []);
      if (!status.classList.contains('error')) say('');
    } catch (e) {
      say(`채팅방 목록을 불러오지 못했습니다: ${e.message}`, true);
    }
  }

  $('create-room').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const input = $('room-name');
    const name = input.value.trim();
    if (!name) { input.focus(); return; }
    if (bytes(name) > MAX_ROOM_NAME_BYTES) {
      say(`방 이름이 너무 깁니다 (UTF-8 ${MAX_ROOM_NAME_BYTES}바이트까지).`, true);
      input.focus();
      return;
    }
    try {
      if (!(await signedIn())) return;
      const res = await fetch('/chat/room', {
        method: 'POST',
        headers: chatdAuth.headers({ Accept: 'application/json' }),
        body: new URLSearchParams({ name }), // form-encoded, as the Spring tutorials post it
      });
      if (!res.ok) throw new Error(await errorText(res));
      const room = await res.json();
      input.value = '';
      say(`"${room.name}" 방을 만들었습니다.`);
      await load();
    } catch (e) {
      say(`방을 만들지 못했습니다: ${e.message}`, true);
    }
  });

  // Entering needs a nickname: ask for it instead of navigating without one.
  list.addEventListener('click', (ev) => {
    const a = ev.target.closest('a[data-room-id]');
    if (!a) return;
    const nick = nickname.value.trim();
    if (!nick) {
      ev.preventDefault();
      say('입장하기 전에 닉네임을 입력하세요.', true);
      nickname.focus();
      return;
    }
    const checked = chatdNames.check(nick);
    if (checked.problem) {
      ev.preventDefault();
      say(checked.problem, true);
      nickname.focus();
      return;
    }
    saveNick(checked.name);
  });

  $('refresh').addEventListener('click', load);
  load();
})();
