package jobstore

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultProxy is a TCP proxy on loopback between a client and a Redis
// server that injects network faults on demand: delay, a blackhole that
// swallows bytes while keeping connections open, cutting every connection,
// and cutting one connection part way through a request or a reply. Faults
// apply to the bytes that pass after they are set.
//
// Close stops it and waits for all its goroutines.
type faultProxy struct {
	ln     net.Listener
	target string

	mu        sync.Mutex
	delay     time.Duration
	blackhole bool
	cutReq    int // > 0: the next request chunk passes this many bytes, then its link is cut
	cutReply  int // the same for the next reply chunk
	links     map[*proxyLink]struct{}
	closed    bool
	accepted  int
	cuts      int

	wg sync.WaitGroup
}

// proxyLink is one proxied connection: a client side and a server side.
type proxyLink struct {
	client, server net.Conn
	once           sync.Once
	gone           chan struct{} // closed by cut
}

func (l *proxyLink) cut() {
	l.once.Do(func() {
		close(l.gone)
		_ = l.client.Close()
		_ = l.server.Close()
	})
}

// startFaultProxy listens on a free loopback port and forwards every
// connection to target. It is closed when the test ends.
func startFaultProxy(t testing.TB, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{ln: ln, target: target, links: make(map[*proxyLink]struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the address clients connect to.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		s, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			_ = c.Close()
			continue
		}
		l := &proxyLink{client: c, server: s, gone: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			l.cut()
			return
		}
		p.links[l] = struct{}{}
		p.accepted++
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(l, c, s, false)
		go p.pipe(l, s, c, true)
	}
}

// pipe copies src to dst, one chunk at a time, applying the faults in
// force when each chunk arrives. reply is true for server-to-client bytes.
func (p *faultProxy) pipe(l *proxyLink, src, dst net.Conn, reply bool) {
	defer p.wg.Done()
	defer func() {
		l.cut()
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			delay, hole := p.delay, p.blackhole
			cutAt := 0
			if reply && p.cutReply > 0 {
				cutAt, p.cutReply = p.cutReply, 0
			} else if !reply && p.cutReq > 0 {
				cutAt, p.cutReq = p.cutReq, 0
			}
			if cutAt > 0 {
				p.cuts++
			}
			p.mu.Unlock()
			if delay > 0 {
				select {
				case <-time.After(delay):
				case <-l.gone:
					return
				}
			}
			chunk := buf[:n]
			if cutAt > 0 && cutAt < n {
				chunk = chunk[:cutAt]
			}
			if !hole {
				if _, werr := dst.Write(chunk); werr != nil {
					return
				}
			}
			if cutAt > 0 {
				return // the deferred cut closes both sides
			}
		}
		if err != nil {
			return
		}
	}
}

// SetDelay holds every chunk for d before forwarding it; 0 turns it off.
func (p *faultProxy) SetDelay(d time.Duration) {
	p.mu.Lock()
	p.delay = d
	p.mu.Unlock()
}

// SetBlackhole makes the proxy swallow every byte in both directions while
// keeping connections open, as a dead route or a frozen server would.
func (p *faultProxy) SetBlackhole(on bool) {
	p.mu.Lock()
	p.blackhole = on
	p.mu.Unlock()
}

// CutReplyAfter forwards only the first n bytes of the next reply chunk
// from the server, then cuts that connection: the client sees part of a
// script or pipeline reply, then EOF, after Redis has executed the command.
func (p *faultProxy) CutReplyAfter(n int) {
	p.mu.Lock()
	p.cutReply = n
	p.mu.Unlock()
}

// CutRequestAfter forwards only the first n bytes of the next request chunk
// from the client, then cuts that connection: Redis sees an incomplete
// command, which it never executes.
func (p *faultProxy) CutRequestAfter(n int) {
	p.mu.Lock()
	p.cutReq = n
	p.mu.Unlock()
}

// CutAll closes every open connection, as a restarted router would.
func (p *faultProxy) CutAll() {
	p.mu.Lock()
	links := make([]*proxyLink, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.cuts += len(links)
	p.mu.Unlock()
	for _, l := range links {
		l.cut()
	}
}

// Heal turns every fault off. Connections cut stay cut; the client
// reconnects.
func (p *faultProxy) Heal() {
	p.mu.Lock()
	p.delay, p.blackhole, p.cutReq, p.cutReply = 0, false, 0, 0
	p.mu.Unlock()
}

// Stats returns how many connections the proxy accepted and cut.
func (p *faultProxy) Stats() (accepted, cuts int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted, p.cuts
}

// Close stops accepting, cuts every connection and waits for the proxy's
// goroutines. It is safe to call more than once.
func (p *faultProxy) Close() {
	p.mu.Lock()
	already := p.closed
	p.closed = true
	p.mu.Unlock()
	if !already {
		_ = p.ln.Close()
	}
	p.CutAll()
	p.wg.Wait()
}
