package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// privateRedis is a redis-server that the benchmark started for itself,
// on a free loopback port, keeping nothing on disk. Only it may receive
// FUNCTION LOAD and unprefixed keys.
type privateRedis struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	dir     string
	rdb     *redis.Client
	Addr    string
	Version string
	LogFile string
}

// startPrivateRedis starts redis-server from PATH on a free port of
// 127.0.0.1 with --save "" --appendonly no, its log in a temporary
// directory, and waits until it answers.
func startPrivateRedis(ctx context.Context) (*privateRedis, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, fmt.Errorf("the claim section starts a redis-server of its own: %w", err)
	}
	var lastErr error
	for range 5 { // another process may take the free port first
		p, err := tryStart(ctx, bin)
		if err == nil {
			return p, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func tryStart(ctx context.Context, bin string) (*privateRedis, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "jobstore-bench-redis-")
	if err != nil {
		return nil, err
	}
	p := &privateRedis{dir: dir, Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		LogFile: filepath.Join(dir, "redis.log"), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir, "--logfile", p.LogFile)
	setParentDeathSignal(p.cmd)
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.exited) }()
	probe := redis.NewClient(&redis.Options{Addr: p.Addr, MaxRetries: -1})
	defer probe.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := probe.Ping(ctx).Err()
		if err == nil {
			break
		}
		select {
		case <-p.exited:
			log, _ := os.ReadFile(p.LogFile)
			p.Stop()
			return nil, fmt.Errorf("redis-server on %s exited: %s", p.Addr, tail(string(log), 300))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("redis-server on %s does not answer: %w", p.Addr, err)
		}
	}
	p.rdb = redis.NewClient(&redis.Options{Addr: p.Addr, PoolSize: 64})
	info, err := p.rdb.Info(ctx, "server").Result()
	if err != nil {
		p.Stop()
		return nil, err
	}
	p.Version = infoField(info, "redis_version")
	return p, nil
}

// Stop kills the server, which this process started, and removes its
// directory.
func (p *privateRedis) Stop() {
	if p.rdb != nil {
		_ = p.rdb.Close()
	}
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
	_ = os.RemoveAll(p.dir)
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("no TCP port")
	}
	return addr.Port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
