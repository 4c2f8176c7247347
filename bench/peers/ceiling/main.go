// The STOMP-less ceiling for bench/run.sh (issue 15): a plain WebSocket pub/sub on
// lesismal/nbio (epoll, no goroutine per connection) that broadcasts every text message it
// receives to every connection. Messages received in one turn of the poller are sent to each
// connection as one write, the same batching chatd does, so the figure is what the machine
// allows for this fan-out, not what a per-message write costs.
//
//	ceiling --port 8080
package main

import (
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"
)

type hub struct {
	mu      sync.Mutex
	conns   map[*websocket.Conn]struct{}
	pending []byte // server frames received since the last flush
	kick    chan struct{}
}

// frame appends one unmasked server text frame carrying p.
func frame(out, p []byte) []byte {
	n := len(p)
	switch {
	case n < 126:
		out = append(out, 0x81, byte(n))
	case n < 65536:
		out = append(out, 0x81, 126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x81, 127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, p...)
}

// flusher runs when the poller goroutine blocks (GOMAXPROCS=1: at the end of its turn) and
// writes what arrived meanwhile to every connection, one write each.
func (h *hub) flusher() {
	for range h.kick {
		h.mu.Lock()
		buf := h.pending
		h.pending = nil
		conns := make([]*websocket.Conn, 0, len(h.conns))
		for c := range h.conns {
			conns = append(conns, c)
		}
		h.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		for _, c := range conns {
			c.Conn.Write(buf) // the raw net.Conn: nbio writes now, or keeps the rest
		}
	}
}

func main() {
	port := flag.Int("port", 8080, "port on 127.0.0.1")
	flag.Parse()
	h := &hub{conns: map[*websocket.Conn]struct{}{}, kick: make(chan struct{}, 1)}
	go h.flusher()
	up := websocket.NewUpgrader()
	up.CheckOrigin = func(*http.Request) bool { return true }
	up.OnMessage(func(c *websocket.Conn, t websocket.MessageType, data []byte) {
		h.mu.Lock()
		h.pending = frame(h.pending, data)
		h.mu.Unlock()
		select {
		case h.kick <- struct{}{}:
		default:
		}
	})
	up.OnClose(func(c *websocket.Conn, err error) {
		h.mu.Lock()
		delete(h.conns, c)
		h.mu.Unlock()
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conns[c] = struct{}{}
		h.mu.Unlock()
	})
	engine := nbhttp.NewEngine(nbhttp.Config{
		Network: "tcp",
		Addrs:   []string{fmt.Sprintf("127.0.0.1:%d", *port)},
		Handler: mux,
	})
	if err := engine.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "ceiling:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	engine.Stop()
}
