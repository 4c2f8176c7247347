#!/usr/bin/env python3
"""stomp.py, a STOMP 1.2 client written by others, against a running chatd.

Usage: stomp_py_client.py <port> <roomId>. Two connections to ws://127.0.0.1:<port>/ws-stomp
without a WebSocket subprotocol (as stomp.py connects): one sends text frames, the other binary
frames. Each check failing exits non-zero with what was seen; on success prints one JSON line,
{"messages": [...]}, the chat messages in the order the room delivered them, for the caller to
compare with another client's view.
"""
import json
import sys
import threading
import time

import stomp

TIMEOUT = 10.0


class Recorder(stomp.ConnectionListener):
    def __init__(self):
        self.cond = threading.Condition()
        self.connected = None
        self.messages = []   # (headers, body) of MESSAGE frames, in arrival order
        self.receipts = {}   # receipt-id -> headers
        self.errors = []     # ERROR frames: none is expected
        self.disconnected = False

    def _add(self, fn):
        with self.cond:
            fn()
            self.cond.notify_all()

    def on_connected(self, frame):
        self._add(lambda: setattr(self, 'connected', frame.headers))

    def on_message(self, frame):
        self._add(lambda: self.messages.append((frame.headers, frame.body)))

    def on_receipt(self, frame):
        self._add(lambda: self.receipts.__setitem__(frame.headers['receipt-id'], frame.headers))

    def on_error(self, frame):
        self._add(lambda: self.errors.append((frame.headers, frame.body)))

    def on_disconnected(self):
        self._add(lambda: setattr(self, 'disconnected', True))

    def wait(self, what, pred):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f'timed out waiting for {what}; messages {self.messages}, '
                         f'receipts {sorted(self.receipts)}, errors {self.errors}')
                self.cond.wait(left)

    def room_messages(self, destination):
        return [(h, json.loads(b)) for h, b in self.messages if h.get('destination') == destination]


def fail(why):
    print(f'stomp.py client: {why}', file=sys.stderr)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def connect(port, binary):
    rec = Recorder()
    conn = stomp.WSStompConnection([('127.0.0.1', port)], ws_path='/ws-stomp', binary_mode=binary,
                                   heartbeats=(0, 2000))
    conn.set_listener('recorder', rec)
    conn.connect(wait=True, headers={'x-note': 'a:b'})
    rec.wait('CONNECTED', lambda: rec.connected is not None)
    check(rec.connected.get('version') == '1.2', f'CONNECTED {rec.connected}: version 1.2 expected')
    # The client asked for a heart-beat from the server every 2 s; the server may offer less often.
    sx, sy = (int(v) for v in rec.connected.get('heart-beat', '0,0').split(','))
    check(sx > 0, f'CONNECTED {rec.connected}: the server should offer heart-beats')
    return conn, rec


def talk(room, sender, text):
    return json.dumps({'type': 'TALK', 'roomId': room, 'sender': sender, 'message': text}, ensure_ascii=False)


def main():
    port, room = int(sys.argv[1]), sys.argv[2]
    dest = f'/sub/chat/room/{room}'
    a, ra = connect(port, binary=False)
    b, rb = connect(port, binary=True)

    # A subscription id that needs STOMP 1.2 header escaping both ways (':', newline, backslash).
    a_sub = 's:1\nx\\y'
    a.subscribe(dest, id=a_sub, ack='client-individual', headers={'receipt': 'sub-a'})
    b.subscribe(dest, id='b', headers={'receipt': 'sub-b'})
    b.subscribe('/user/queue/errors', id='errors', headers={'receipt': 'sub-errors'})
    ra.wait('RECEIPT sub-a', lambda: 'sub-a' in ra.receipts)
    rb.wait('RECEIPTs sub-b, sub-errors', lambda: {'sub-b', 'sub-errors'} <= set(rb.receipts))

    texts = ['짜장면 어때? 🍜', 'colon: and\nnewline', 'back\\slash "quoted"']
    for i, text in enumerate(texts):
        a.send('/pub/chat/message', talk(room, '파이썬', text), content_type='application/json',
               headers={'receipt': f'a{i}'})
    b.send('/pub/chat/message', talk(room, 'binary', 'from a binary frame'), content_type='application/json',
           headers={'receipt': 'b0'})
    texts.append('from a binary frame')

    for rec, sub in ((ra, a_sub), (rb, 'b')):
        rec.wait(f'4 MESSAGEs on {sub!r}', lambda: len(rec.room_messages(dest)) >= 4)
        got = rec.room_messages(dest)
        check(all(h.get('subscription') == sub for h, _ in got),
              f'subscription headers {[h.get("subscription") for h, _ in got]}, expected {sub!r}')
        check(sorted(m['message'] for _, m in got) == sorted(texts), f'{sub!r} got {[m for _, m in got]}')
        check(all(m['roomId'] == room for _, m in got), f'{sub!r} got another room: {got}')
        # Three sends from one connection stay in order; all four take seqs 1..4 in delivery order.
        mine = [m['message'] for _, m in got if m['sender'] == '파이썬']
        check(mine == texts[:3], f'{sub!r}: one sender\'s messages out of order: {mine}')
        check([m['seq'] for _, m in got] == [1, 2, 3, 4], f'{sub!r}: seqs {[m["seq"] for _, m in got]}')
    check([m for _, m in ra.room_messages(dest)] == [m for _, m in rb.room_messages(dest)],
          'the two connections saw the room in different orders')

    # Each RECEIPT names the seq its message got.
    ra.wait('RECEIPTs a0..a2', lambda: {'a0', 'a1', 'a2'} <= set(ra.receipts))
    rb.wait('RECEIPT b0', lambda: 'b0' in rb.receipts)
    seq_of = {m['message']: m['seq'] for _, m in ra.room_messages(dest)}
    for rid, text, rec in [('a0', texts[0], ra), ('a1', texts[1], ra), ('a2', texts[2], ra), ('b0', texts[3], rb)]:
        check(rec.receipts[rid].get('x-seq') == str(seq_of[text]),
              f'RECEIPT {rid} {rec.receipts[rid]}: x-seq {seq_of[text]} expected')

    # STOMP 1.2: a client-individual subscription's MESSAGEs carry `ack`, an auto one's do not;
    # ACK by it, as a 1.2 client does.
    check(all(h.get('ack') == h['message-id'] for h, _ in ra.room_messages(dest)),
          f'ack headers on the client-individual subscription: {[h for h, _ in ra.room_messages(dest)]}')
    check(all('ack' not in h for h, _ in rb.room_messages(dest)), 'an auto subscription got ack headers')
    for h, _ in ra.room_messages(dest):
        a.ack(h['ack'], h['subscription'])

    # A body that is no chat message: told on /user/queue/errors, the connection stays.
    b.send('/pub/chat/message', 'not json', headers={'receipt': 'bad'})
    rb.wait('the refusal on /user/queue/errors', lambda: any(h.get('destination') == '/user/queue/errors'
                                                             for h, _ in rb.messages))
    (refusal_h, refusal_body), = [(h, json.loads(body)) for h, body in rb.messages
                                  if h.get('destination') == '/user/queue/errors']
    check(refusal_h.get('receipt-id') == 'bad' and refusal_body.get('status') == 400,
          f'refusal {refusal_h} {refusal_body}')

    # Both still talk after the ACKs and the refusal.
    a.send('/pub/chat/message', talk(room, '파이썬', 'still here'), content_type='application/json',
           headers={'receipt': 'a3'})
    texts.append('still here')
    ra.wait('RECEIPT a3', lambda: 'a3' in ra.receipts)
    rb.wait('the fifth MESSAGE', lambda: len(rb.room_messages(dest)) >= 5)
    ra.wait('the fifth MESSAGE', lambda: len(ra.room_messages(dest)) >= 5)
    check(rb.room_messages(dest)[4][1]['seq'] == 5, f'fifth message {rb.room_messages(dest)[4]}')
    check(not ra.errors and not rb.errors, f'ERROR frames: {ra.errors} {rb.errors}')

    # DISCONNECT with a receipt: the RECEIPT comes, then the server closes.
    for conn, rec, rid in ((a, ra, 'bye-a'), (b, rb, 'bye-b')):
        conn.disconnect(receipt=rid)
        rec.wait(f'RECEIPT {rid} and the close', lambda: rid in rec.receipts and rec.disconnected)

    print(json.dumps({'messages': [m for _, m in ra.room_messages(dest)]}, ensure_ascii=False))


if __name__ == '__main__':
    main()
