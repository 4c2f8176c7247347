// Login for chatd run with --auth jwt: the pages learn whether the server wants a token (the
// room list answers 401), get one for the nickname from POST /auth/dev-token (only with the
// DEV-ONLY --auth-dev-mint; a real deployment hands the page a token from its own login), keep
// it for the tab (sessionStorage) and send it: Authorization on REST and CONNECT, access_token
// on the SockJS/WebSocket URL. The server takes the sender from the token, so nobody speaks
// as someone else. With --auth none nothing here changes what the pages do.
'use strict';

(() => {
  const KEY = 'chatd.token';
  let jwt = null;     // learnt once per page
  let current = null; // the token, when sessionStorage cannot keep it

  function stored() {
    try {
      const t = JSON.parse(sessionStorage.getItem(KEY) || 'null');
      // A token about to expire is as good as none: a new one is fetched instead.
      if (t && t.token && t.exp * 1000 > Date.now() + 60_000) return t;
    } catch { /* private mode or junk */ }
    return null;
  }

  // Resolves whether the server runs --auth jwt: its room list refuses a caller without a token.
  async function needed() {
    if (jwt === null) jwt = (await fetch('/chat/rooms?limit=1', { cache: 'no-store' })).status === 401;
    return jwt;
  }

  // Resolves { token, name } for `nick` (token null with --auth none); throws with a reason.
  async function login(nick) {
    if (!(await needed())) return { token: null, name: nick };
    const have = stored();
    if (have && have.nick === nick) return have;
    const res = await fetch(`/auth/dev-token?name=${encodeURIComponent(nick)}`, { method: 'POST', cache: 'no-store' });
    if (res.status === 404) throw new Error('이 서버는 토큰이 필요합니다 (--auth jwt, dev-token 없음)');
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `${res.status}`);
    const t = { token: body.token, name: body.name, nick, exp: Math.floor(Date.now() / 1000) + body.expiresIn };
    try { sessionStorage.setItem(KEY, JSON.stringify(t)); } catch { /* private mode: this page only */ }
    current = t;
    return t;
  }

  // The tab's token, or this page's when sessionStorage cannot keep it; one about to expire
  // only until login() replaces it.
  const token = () => (stored() || current)?.token ?? null;
  function headers(extra = {}) {
    const t = token();
    return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
  }
  function url(path) {
    const t = token();
    return t ? `${path}${path.includes('?') ? '&' : '?'}access_token=${encodeURIComponent(t)}` : path;
  }

  window.chatdAuth = { needed, login, headers, url, token };
})();
