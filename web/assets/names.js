// The server's rules for a nickname (README "Names", src/chat/rules.cpp check_name), so a page
// asks again for a name the server would refuse instead of keeping it and failing every send:
// trimmed of blanks and invisible characters at both ends, something visible left, no control,
// line-break or bidirectional formatting characters, at most 64 bytes of UTF-8.
'use strict';

(() => {
  const MAX_BYTES = 64;
  const invisible = (c) => c === 0x20 || c === 0x09 || c === 0xA0 || c === 0xAD || c === 0x115F || c === 0x1160 ||
    c === 0x1680 || c === 0x180E || (c >= 0x2000 && c <= 0x200D) || c === 0x202F || c === 0x205F || c === 0x2060 ||
    c === 0x2800 || c === 0x3000 || c === 0x3164 || c === 0xFEFF || c === 0xFFA0;
  const forbidden = (c) => c < 0x20 || (c >= 0x7F && c <= 0x9F) || c === 0x061C || c === 0x200E || c === 0x200F ||
    c === 0x2028 || c === 0x2029 || (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069);

  // Returns { name } (trimmed as the server trims it) or { problem } (a Korean sentence).
  function check(raw) {
    const cps = [...String(raw ?? '')].map((ch) => ch.codePointAt(0));
    let first = 0;
    let last = cps.length;
    while (first < last && invisible(cps[first])) first++;
    while (last > first && invisible(cps[last - 1])) last--;
    if (first === last) return { problem: '닉네임에 보이는 글자가 있어야 합니다.' };
    const kept = cps.slice(first, last);
    if (kept.some(forbidden)) return { problem: '닉네임에 제어 문자, 줄바꿈, 방향 제어 문자는 쓸 수 없습니다.' };
    const name = String.fromCodePoint(...kept);
    if (new TextEncoder().encode(name).length > MAX_BYTES) return { problem: `닉네임이 너무 깁니다 (UTF-8 ${MAX_BYTES}바이트까지).` };
    return { name };
  }

  window.chatdNames = { check, MAX_BYTES };
})();
