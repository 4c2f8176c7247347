// The STOMP-less ceiling for bench/run.sh (issue 15): a plain WebSocket pub/sub on
// lesismal/nbio (epoll, no goroutine per connection) that broadcasts every text message it
// receives to every connection upgraded on the same URL path: one room per path (the
// generator's --path /{room} spreads its connections over rooms; --path / keeps them in one).
// Messages a room received in one turn of the poller are sent to each of its connections as one
// write, the same batching chatd does, so the figure is what the machine allows for this
// fan-out, not what a per-message write costs.
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

// A room: the connections upgraded on one URL path ("/" for the plain broadcast).
type hub struct {
	conns   map[*websocket.Conn]struct{}
	pending []byte // server frames received since the last flush
}

type server struct {
	mu    sync.Mutex
	hubs  map[string]*hub
	of    map[*websocket.Conn]*hub
	dirty []*hub // hubs with pending frames, each once
	kick  chan struct{}
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
// writes what each room received meanwhile to every connection of that room, one write each.
func (s *server) flusher() {
	type job struct {
		buf   []byte
		conns []*websocket.Conn
	}
	var jobs []job
	for range s.kick {
		jobs = jobs[:0]
		s.mu.Lock()
		for _, h := range s.dirty {
			conns := make([]*websocket.Conn, 0, len(h.conns))
			for c := range h.conns {
				conns = append(conns, c)
			}
			jobs = append(jobs, job{h.pending, conns})
			h.pending = nil
		}
		s.dirty = s.dirty[:0]
		s.mu.Unlock()
		for _, j := range jobs {
			for _, c := range j.conns {
				c.Conn.Write(j.buf) // the raw net.Conn: nbio writes now, or keeps the rest
			}
		}
	}
}

func main() {
	port := flag.Int("port", 8080, "port on 127.0.0.1")
	flag.Parse()
	s := &server{hubs: map[string]*hub{}, of: map[*websocket.Conn]*hub{}, kick: make(chan struct{}, 1)}
	go s.flusher()
	up := websocket.NewUpgrader()
	up.CheckOrigin = func(*http.Request) bool { return true }
	up.OnMessage(func(c *websocket.Conn, t websocket.MessageType, data []byte) {
		s.mu.Lock()
		if h := s.of[c]; h != nil {
			if len(h.pending) == 0 {
				s.dirty = append(s.dirty, h)
			}
			h.pending = frame(h.pending, data)
		}
		s.mu.Unlock()
		select {
		case s.kick <- struct{}{}:
		default:
		}
	})
	up.OnClose(func(c *websocket.Conn, err error) {
		s.mu.Lock()
		if h := s.of[c]; h != nil {
			delete(h.conns, c)
			delete(s.of, c)
		}
		s.mu.Unlock()
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		h := s.hubs[r.URL.Path]
		if h == nil {
			h = &hub{conns: map[*websocket.Conn]struct{}{}}
			s.hubs[r.URL.Path] = h
		}
		h.conns[c] = struct{}{}
		s.of[c] = h
		s.mu.Unlock()
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
