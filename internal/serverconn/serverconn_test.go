package serverconn

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

type replica struct {
	addr string
	srv  *grpc.Server
}

func startReplica(t *testing.T) *replica {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return &replica{addr: l.Addr().String(), srv: srv}
}

// check calls until one succeeds (an agent retries a failed sync the same
// way), returning how many calls failed first.
func check(ctx context.Context, t *testing.T, cc *grpc.ClientConn) int {
	t.Helper()
	failed := 0
	for {
		_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			return failed
		}
		failed++
		if ctx.Err() != nil {
			t.Fatalf("no replica answered: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Three replicas: the connection stays on the one it picked while it
// answers, moves to a live one when it stops (one ClientConn, no new dial),
// and the tracker names each and reports the change.
func TestFailsOverAndTracks(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	byAddr := map[string]*replica{}
	var addrs []string
	for range 3 {
		r := startReplica(t)
		byAddr[r.addr] = r
		addrs = append(addrs, r.addr)
	}
	var mu sync.Mutex
	var changes []string
	tr := &Tracker{OnChange: func(from, to string) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, from+"->"+to)
	}}
	cc, err := Dial(addrs, tr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	check(ctx, t, cc)
	first := tr.Current()
	if byAddr[first] == nil {
		t.Fatalf("tracker says %q, not one of %v", first, addrs)
	}
	for range 20 {
		if n := check(ctx, t, cc); n != 0 {
			t.Fatalf("%d calls failed while %s was up", n, first)
		}
		if cur := tr.Current(); cur != first {
			t.Fatalf("moved from %s to %s while it answered", first, cur)
		}
	}

	byAddr[first].srv.Stop()
	check(ctx, t, cc)
	second := tr.Current()
	if second == first || byAddr[second] == nil {
		t.Fatalf("after %s stopped the tracker says %q", first, second)
	}
	byAddr[second].srv.Stop()
	check(ctx, t, cc)
	third := tr.Current()
	if third == first || third == second || byAddr[third] == nil {
		t.Fatalf("after %s and %s stopped the tracker says %q", first, second, third)
	}
	mu.Lock()
	got := strings.Join(changes, " ")
	mu.Unlock()
	if want := "->" + first + " " + first + "->" + second + " " + second + "->" + third; got != want {
		t.Errorf("changes %q, want %q", got, want)
	}
}

// Agents given the same list do not all land on its first address.
func TestSpreadsOverReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var addrs []string
	for range 3 {
		addrs = append(addrs, startReplica(t).addr)
	}
	used := map[string]int{}
	for range 30 {
		tr := &Tracker{}
		cc, err := Dial(addrs, tr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		check(ctx, t, cc)
		used[tr.Current()]++
		cc.Close()
	}
	// 30 shuffled picks all on one of three: probability 3 * 3^-30.
	if len(used) < 2 {
		t.Errorf("30 connections all used %v", used)
	}
}

// One address that is a name: resolved by DNS (here localhost), and the
// tracker names the address reached.
func TestOneNameResolved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplica(t)
	_, port, _ := net.SplitHostPort(r.addr)
	tr := &Tracker{}
	cc, err := Dial([]string{"localhost:" + port}, tr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	check(ctx, t, cc)
	if tr.Current() != r.addr {
		t.Errorf("tracker says %q, want %s", tr.Current(), r.addr)
	}
}

// A stream's server is observed once it has answered.
func TestStreamTracked(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := startReplica(t)
	tr := &Tracker{}
	cc, err := Dial([]string{r.addr, startReplica(t).addr}, tr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if tr.Current() == "" {
		t.Error("the stream's server was not tracked")
	}
}

func TestSplit(t *testing.T) {
	got, err := Split(" 10.0.0.1:8081, server-b.example.org:8081 ,")
	if err != nil || strings.Join(got, " ") != "10.0.0.1:8081 server-b.example.org:8081" {
		t.Errorf("Split = %q, %v", got, err)
	}
	for in, want := range map[string]string{
		"":                          "no server address given",
		"10.0.0.1":                  `server address "10.0.0.1" is not host:port`,
		"a:1,:2":                    `server address ":2" is not host:port`,
		"a:1,a:1":                   "server address a:1 is listed twice",
		"10.0.0.1:8081,10.0.0.2:80": "",
	} {
		_, err := Split(in)
		if (err == nil) != (want == "") || (err != nil && err.Error() != want) {
			t.Errorf("Split(%q) error %v, want %q", in, err, want)
		}
	}
}
