package svidcli

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Watch keeps every target of cfg written as files until ctx ends: it
// watches the Workload API (go-spiffe's client, which reconnects when the
// agent restarts), writes a target's files whenever its SVID or bundle
// changes (all of them staged first and then renamed into place, so a failed
// write leaves the old files intact), renews its JWT-SVID at half its
// lifetime, and then runs its reload command and sends its reload signal.
// Failures are logged and retried with capped, jittered backoff; they make
// /ready fail until they clear. With cfg.Once it returns after every target
// was written and reloaded once, or with the last failures when ctx ends
// first. It returns nil when ctx ends otherwise.
func Watch(ctx context.Context, cfg WatchConfig) error {
	const op = "svid watch"
	if err := cfg.Validate(); err != nil {
		if cfg.HealthListener != nil {
			cfg.HealthListener.Close()
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	w := &watcher{cfg: cfg, log: cfg.Logger, addr: Options{Addr: cfg.Addr}.addr()}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.connErr = errNoSVIDYet
	for i := range cfg.Targets {
		w.targets = append(w.targets, &targetState{t: &cfg.Targets[i], notify: make(chan struct{}, 1),
			backoff: w.newBackoff(), written: map[string][sha256.Size]byte{}})
	}

	var httpSrv *http.Server
	lis := cfg.HealthListener
	if lis == nil && cfg.HealthListen != "" {
		var err error
		if lis, err = net.Listen("tcp", cfg.HealthListen); err != nil {
			return fmt.Errorf("%s: health_listen: %w", op, err)
		}
	}
	if lis != nil {
		httpSrv = &http.Server{Handler: w.healthHandler(), ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 8 << 10}
	}

	client, err := workloadapi.New(ctx, workloadapi.WithAddr(w.addr),
		workloadapi.WithBackoffStrategy(backoffStrategy{w.newBackoff}))
	if err != nil {
		if lis != nil {
			lis.Close()
		}
		return fmt.Errorf("%s: %w at %s: %v", op, ErrUnreachable, w.addr, err)
	}
	defer client.Close()
	w.client = client
	if err := checkSocket(w.addr); err != nil {
		// Not fatal: the agent may start after us; the watch retries.
		w.log.Warn("svid watch: "+err.Error(), "addr", w.addr)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	if httpSrv != nil {
		wg.Go(func() { httpSrv.Serve(lis) })
		w.log.Info("svid watch: health endpoint listening", "addr", lis.Addr().String())
	}
	wg.Go(func() { w.watchX509(ctx) })
	var targets sync.WaitGroup
	for _, ts := range w.targets {
		targets.Go(func() { w.runTarget(ctx, ts) })
	}
	targetsDone := make(chan struct{})
	go func() { targets.Wait(); close(targetsDone) }()

	var result error
	select {
	case <-ctx.Done():
		if cfg.Once {
			result = fmt.Errorf("%s: not every SVID was written: %s", op, w.notReady())
		}
	case <-targetsDone: // only in Once mode
	}
	cancel()
	<-targetsDone
	if httpSrv != nil {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		httpSrv.Shutdown(sctx)
		scancel()
	}
	wg.Wait()
	return result
}

// watcher is one running `arbor svid watch`.
type watcher struct {
	cfg     WatchConfig
	log     *slog.Logger
	addr    string
	client  *workloadapi.Client
	targets []*targetState

	mu      sync.Mutex
	latest  *workloadapi.X509Context
	connErr error // why the Workload API stream is down; nil while it is up
}

// targetState is the running state of one target. Only its own goroutine
// writes files and the fields above mu.
type targetState struct {
	t       *Target
	notify  chan struct{}
	backoff *backoff
	written map[string][sha256.Size]byte // content last committed per path
	pending bool                         // files changed since the last successful reload
	jwtFor  spiffeid.ID
	jwtNext time.Time // when to renew the JWT-SVID

	mu       sync.Mutex
	err      error // the last failure, nil after a success
	done     bool  // written and reloaded at least once
	id       spiffeid.ID
	notAfter time.Time
}

func (w *watcher) now() time.Time {
	if w.cfg.Now != nil {
		return w.cfg.Now()
	}
	return time.Now()
}

// watchX509 keeps the X509-SVID stream open; go-spiffe's client reconnects
// with backoff by itself and returns only on InvalidArgument, after which
// it is started again.
func (w *watcher) watchX509(ctx context.Context) {
	b := w.newBackoff()
	for {
		err := w.client.WatchX509Context(ctx, (*x509Watcher)(w))
		if ctx.Err() != nil {
			return
		}
		w.setConnErr(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(b.Next()):
		}
	}
}

// x509Watcher receives go-spiffe's watch events.
type x509Watcher watcher

func (x *x509Watcher) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	w := (*watcher)(x)
	w.mu.Lock()
	w.latest = xc
	was := w.connErr
	w.connErr = nil
	w.mu.Unlock()
	if was != nil && was != errNoSVIDYet {
		w.log.Info("svid watch: Workload API stream restored", "addr", w.addr)
	}
	for _, ts := range w.targets {
		select {
		case ts.notify <- struct{}{}:
		default:
		}
	}
}

func (x *x509Watcher) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled {
		return
	}
	(*watcher)(x).setConnErr(err)
}

// setConnErr records why the stream is down, logging only a new reason.
func (w *watcher) setConnErr(err error) {
	err = w.describe(err)
	w.mu.Lock()
	was := w.connErr
	w.connErr = err
	w.mu.Unlock()
	if was == nil || was.Error() != err.Error() {
		w.log.Error("svid watch: Workload API: "+err.Error()+"; retrying, the files keep their last SVID", "addr", w.addr)
	}
}

// describe turns a Workload API failure into one readable line.
func (w *watcher) describe(err error) error {
	if err := checkSocket(w.addr); err != nil {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := oneLine(st.Message())
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("%w at %s (%s)", ErrUnreachable, w.addr, lastCause(msg))
	case codes.PermissionDenied:
		return fmt.Errorf("%w (%s): check that a registration entry matches this process's selectors", ErrNoIdentity, msg)
	}
	return fmt.Errorf("%s (%s)", msg, st.Code())
}

func (w *watcher) current() (*workloadapi.X509Context, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.connErr
}

// runTarget keeps one target's files current.
func (w *watcher) runTarget(ctx context.Context, ts *targetState) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		again := w.sync(ctx, ts)
		if w.cfg.Once {
			ts.mu.Lock()
			done := ts.done && ts.err == nil
			ts.mu.Unlock()
			if done {
				return
			}
		}
		timer.Stop()
		if again > 0 {
			timer.Reset(again)
		}
		select {
		case <-ctx.Done():
			return
		case <-ts.notify:
		case <-timer.C:
		}
	}
}

// sync writes what changed and reloads; it returns when to try again (zero:
// at the next update).
func (w *watcher) sync(ctx context.Context, ts *targetState) time.Duration {
	t := ts.t
	xc, _ := w.current()
	if xc == nil {
		return 0 // nothing received yet; /ready says why
	}
	svid, err := t.pickSVID(xc)
	if err != nil {
		return w.fail(ts, err)
	}
	files, err := t.render(svid, xc.Bundles)
	if err != nil {
		return w.fail(ts, err)
	}
	now := w.now()
	var jwtNext time.Time
	if t.JWTFile != "" && (ts.jwtFor != svid.ID || !now.Before(ts.jwtNext)) {
		tok, err := w.fetchJWT(ctx, t, svid.ID)
		if err != nil {
			return w.fail(ts, err)
		}
		files = append(files, fileContent{t.JWTFile, []byte(tok.Marshal() + "\n"), 0o600})
		jwtNext = now.Add(tok.Expiry.Sub(now) / 2)
	}

	var changed []fileContent
	for _, f := range files {
		if sum := sha256.Sum256(f.data); ts.written[f.path] != sum {
			changed = append(changed, f)
		}
	}
	if len(changed) > 0 {
		if err := commitFiles(changed, t.Owner); err != nil {
			return w.fail(ts, err)
		}
		for _, f := range changed {
			ts.written[f.path] = sha256.Sum256(f.data)
		}
		ts.pending = true
		w.log.Info("svid watch: wrote files", "svid", t.Name, "spiffe_id", svid.ID.String(),
			"serial", svid.Certificates[0].SerialNumber.Text(16), "expires", svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339),
			"files", len(changed))
	}
	if !jwtNext.IsZero() {
		ts.jwtFor, ts.jwtNext = svid.ID, jwtNext
	}
	if ts.pending && (t.ReloadCommand != "" || t.ReloadSignal != 0) {
		env := []string{"ARBOR_SVID_NAME=" + t.Name, "ARBOR_SPIFFE_ID=" + svid.ID.String()}
		switch err := t.reload(ctx, env); {
		case errors.Is(err, errNotRunning):
			w.log.Warn("svid watch: "+err.Error(), "svid", t.Name, "pid_file", t.PIDFile)
		case err != nil:
			if ctx.Err() != nil {
				return 0
			}
			return w.fail(ts, err)
		default:
			w.log.Info("svid watch: reloaded", "svid", t.Name)
		}
	}
	ts.pending = false

	ts.mu.Lock()
	recovered := ts.err != nil
	ts.err, ts.done, ts.id, ts.notAfter = nil, true, svid.ID, svid.Certificates[0].NotAfter
	ts.mu.Unlock()
	if recovered {
		w.log.Info("svid watch: recovered", "svid", t.Name)
	}
	ts.backoff.Reset()
	if t.JWTFile != "" {
		return max(ts.jwtNext.Sub(w.now()), time.Second)
	}
	return 0
}

// fail records err for the target and returns the backoff before the retry.
func (w *watcher) fail(ts *targetState, err error) time.Duration {
	ts.mu.Lock()
	was := ts.err
	ts.err = err
	ts.mu.Unlock()
	d := ts.backoff.Next()
	if was == nil || was.Error() != err.Error() {
		w.log.Error("svid watch: "+err.Error(), "svid", ts.t.Name, "retry_in", d.Round(time.Millisecond).String())
	}
	return d
}

func (w *watcher) fetchJWT(ctx context.Context, t *Target, id spiffeid.ID) (*jwtsvid.SVID, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
	defer cancel()
	tok, err := w.client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: t.JWTAudiences[0], ExtraAudiences: t.JWTAudiences[1:], Subject: id})
	if err != nil {
		return nil, fmt.Errorf("fetch JWT-SVID for %s: %w", id, w.describe(err))
	}
	return tok, nil
}

// notReady says why the process is not ready, or "" when it is.
func (w *watcher) notReady() string {
	var why []string
	_, connErr := w.current()
	if connErr != nil {
		why = append(why, "Workload API: "+connErr.Error())
	}
	now := w.now()
	for _, ts := range w.targets {
		ts.mu.Lock()
		switch {
		case ts.err != nil:
			why = append(why, fmt.Sprintf("svid %q: %v", ts.t.Name, ts.err))
		case !ts.done:
			why = append(why, fmt.Sprintf("svid %q: not written yet", ts.t.Name))
		case !now.Before(ts.notAfter):
			why = append(why, fmt.Sprintf("svid %q: %s expired at %s", ts.t.Name, ts.id, ts.notAfter.UTC().Format(time.RFC3339)))
		}
		ts.mu.Unlock()
	}
	return strings.Join(why, "; ")
}

// healthHandler serves /live (the process runs) and /ready (every target's
// files hold its current SVID, the last reload succeeded and the Workload
// API stream is up).
func (w *watcher) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/live", func(rw http.ResponseWriter, _ *http.Request) {
		io.WriteString(rw, "live\n")
	})
	mux.HandleFunc("/ready", func(rw http.ResponseWriter, _ *http.Request) {
		if why := w.notReady(); why != "" {
			http.Error(rw, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(rw, "ready\n")
	})
	return mux
}

// backoff is capped exponential backoff with jitter: each wait is drawn
// from [d/2, d], d doubling from base up to max.
type backoff struct {
	base, max, cur time.Duration
}

func (w *watcher) newBackoff() *backoff {
	b := &backoff{base: w.cfg.RetryBase, max: w.cfg.RetryMax}
	if b.base <= 0 {
		b.base = time.Second
	}
	if b.max <= 0 {
		b.max = 30 * time.Second
	}
	b.max = max(b.max, b.base)
	return b
}

func (b *backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.base
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) Reset() { b.cur = 0 }

// backoffStrategy gives go-spiffe's client the same backoff.
type backoffStrategy struct{ newBackoff func() *backoff }

func (s backoffStrategy) NewBackoff() workloadapi.Backoff { return s.newBackoff() }

var _ workloadapi.X509ContextWatcher = (*x509Watcher)(nil)
