// Command profserver runs one arbor server in-process, configured as
// test/load/serve.sh configures `arbor server` (SQLite, join_token, EC P-256,
// 1h X509-SVIDs), so that a load can be profiled with Go's own profiler:
// SIGUSR1 starts a CPU profile, SIGUSR2 stops it and writes a heap profile
// beside it. SIGINT or SIGTERM stops the server.
//
//	go run ./test/load/profserver --dir /tmp/prof --listen 127.0.0.1:18110 &
//	kill -USR1 $pid; ...; kill -USR2 $pid
//	go tool pprof -top /tmp/prof/cpu.pprof
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/arborid/arbor/internal/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "profserver:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "directory for state, the admin socket (api.sock), pid and profiles (required)")
	listen := flag.String("listen", "127.0.0.1:18110", "agent API address")
	flag.Parse()
	if *dir == "" {
		return fmt.Errorf("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := server.Config{Name: "load", TrustDomain: spiffeid.RequireTrustDomainFromString("example.org"),
		ListenAddr: *listen, AdminSocket: filepath.Join(*dir, "api.sock"), StateDir: filepath.Join(*dir, "state"),
		JoinToken: true, DefaultJoinTokenTTL: time.Hour, X509SVIDTTL: time.Hour, JWTSVIDTTL: 5 * time.Minute, CATTL: 24 * time.Hour,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "pid"), []byte(fmt.Sprintln(os.Getpid())), 0o600); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGUSR2)
	go func() {
		var f *os.File
		for s := range sigs {
			switch {
			case s == syscall.SIGUSR1 && f == nil:
				if f, err = os.Create(filepath.Join(*dir, "cpu.pprof")); err == nil {
					err = pprof.StartCPUProfile(f)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, "profserver: cpu profile:", err)
					f = nil
				}
			case s == syscall.SIGUSR2 && f != nil:
				pprof.StopCPUProfile()
				f.Close()
				f = nil
				runtime.GC()
				if h, err := os.Create(filepath.Join(*dir, "heap.pprof")); err == nil {
					pprof.WriteHeapProfile(h)
					h.Close()
				}
				fmt.Fprintln(os.Stderr, "profserver: wrote", filepath.Join(*dir, "cpu.pprof"), "and heap.pprof")
			}
		}
	}()
	return srv.Run(ctx)
}
