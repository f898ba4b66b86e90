package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/event"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/pkg/blobinfocache/memory"
	"go.podman.io/image/v5/types"
)

// Defaults for Options' robustness knobs.
const (
	DefaultRetries      = 4
	DefaultBackoff      = time.Second
	DefaultStallTimeout = 60 * time.Second
	maxBackoff          = 30 * time.Second
)

func (o Options) retries() int {
	if o.Retries <= 0 {
		return DefaultRetries
	}
	return o.Retries
}

func (o Options) backoff() time.Duration {
	if o.RetryBackoff <= 0 {
		return DefaultBackoff
	}
	return o.RetryBackoff
}

func (o Options) stallTimeout() time.Duration {
	if o.StallTimeout <= 0 {
		return DefaultStallTimeout
	}
	return o.StallTimeout
}

// errStalled is the cause set on an attempt that made no progress for the
// stall timeout.
type errStalled struct{ d time.Duration }

func (e errStalled) Error() string { return fmt.Sprintf("no data for %s", e.d) }

// errTruncated reports a body that ended before its declared size.
var errTruncated = errors.New("the transfer ended early")

// transient reports whether err is worth another attempt: server errors,
// dropped or reset connections, timeouts and stalls. Authentication, "not
// found", policy and malformed-image errors are not.
func transient(err error) bool {
	if err == nil {
		return false
	}
	var st errStalled
	var hs docker.UnexpectedHTTPStatusError
	var ne net.Error
	switch {
	case errs.KindOf(err) == errs.Image || errs.KindOf(err) == errs.Usage:
		return false
	case errors.As(err, &st), errors.Is(err, errTruncated):
		return true
	case errors.As(err, &hs):
		return hs.StatusCode >= 500 || hs.StatusCode == 429 || hs.StatusCode == 408
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF),
		errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &ne) && ne.Timeout():
		return true
	}
	return false
}

// retrier runs attempts with exponential backoff (doubling, capped, reset
// whenever an attempt made progress) while failures are transient.
type retrier struct {
	opts     Options
	em       event.Emitter
	what     string // "blob sha256:…" for messages
	failures int    // consecutive failed attempts without progress
	delay    time.Duration
	attempts int
}

// failed records err and waits before the next attempt; it returns false
// (and the error to report) when no attempt is left.
func (r *retrier) failed(ctx context.Context, err error, progressed bool) (bool, error) {
	r.attempts++
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if !transient(err) {
		return false, err
	}
	if progressed {
		r.failures, r.delay = 0, 0
	}
	if r.failures >= r.opts.retries() {
		return false, err
	}
	r.failures++
	if r.delay == 0 {
		r.delay = r.opts.backoff()
	} else {
		r.delay = min(2*r.delay, maxBackoff)
	}
	r.em.Warn(fmt.Sprintf("fetching %s failed (%v); retry %d of %d in %s", r.what, err, r.failures, r.opts.retries(), r.delay))
	t := time.NewTimer(r.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-t.C:
		return true, nil
	}
}

// withRetry runs op until it succeeds or fails for good. Each attempt gets
// the stall timeout as its deadline: op must only do small requests
// (manifests, configs, signatures) whose results outlive no context.
func withRetry(ctx context.Context, opts Options, em event.Emitter, what string, op func(context.Context) error) error {
	r := &retrier{opts: opts, em: em, what: what}
	for {
		actx, cancel := context.WithTimeout(ctx, opts.stallTimeout())
		err := op(actx)
		if err != nil && ctx.Err() == nil && actx.Err() != nil {
			err = errStalled{opts.stallTimeout()}
		}
		cancel()
		if err == nil {
			return nil
		}
		again, ferr := r.failed(ctx, err, false)
		if !again {
			return ferr
		}
	}
}

// watchdog cancels an attempt's context when no byte arrived for the stall
// timeout. HTTP bodies read under that context then fail at once.
type watchdog struct {
	mu     sync.Mutex
	last   time.Time
	cancel context.CancelCauseFunc
	stop   chan struct{}
}

func startWatchdog(ctx context.Context, timeout time.Duration) (context.Context, *watchdog) {
	actx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{last: time.Now(), cancel: cancel, stop: make(chan struct{})}
	tick := min(timeout/4, time.Second)
	go func() {
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-actx.Done():
				return
			case <-t.C:
				w.mu.Lock()
				idle := time.Since(w.last)
				w.mu.Unlock()
				if idle >= timeout {
					cancel(errStalled{timeout})
					return
				}
			}
		}
	}()
	return actx, w
}

func (w *watchdog) touch() {
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
}

func (w *watchdog) close() {
	close(w.stop)
	w.cancel(nil)
}

// blobReader reads one blob from an image source, transparently starting a
// new attempt after a transient failure and continuing at the offset
// already delivered (see the package comment for how the offset is reached).
// It reports errTruncated when the body ends before info.Size bytes.
type blobReader struct {
	ctx  context.Context
	isrc types.ImageSource
	info types.BlobInfo
	r    *retrier

	rc   io.ReadCloser
	wd   *watchdog
	actx context.Context
	off  int64 // bytes delivered to the caller
	mark int64 // off when the current attempt started
	err  error // sticky final error
}

func newBlobReader(ctx context.Context, isrc types.ImageSource, info types.BlobInfo, opts Options, em event.Emitter) *blobReader {
	return &blobReader{ctx: ctx, isrc: isrc, info: info, r: &retrier{opts: opts, em: em, what: "blob " + info.Digest.String()}}
}

// open starts an attempt at b.off.
func (b *blobReader) open() error {
	b.actx, b.wd = startWatchdog(b.ctx, b.r.opts.stallTimeout())
	b.mark = b.off
	rc, err := openAt(b.actx, b.isrc, b.info, b.off, b.wd)
	if err != nil {
		b.endAttempt()
		return err
	}
	b.rc = rc
	return nil
}

func (b *blobReader) endAttempt() {
	if b.rc != nil {
		_ = b.rc.Close()
		b.rc = nil
	}
	if b.wd != nil {
		b.wd.close()
		b.wd = nil
	}
}

// cause maps an attempt's context cancellation to the stall that caused it.
func (b *blobReader) cause(err error) error {
	if b.ctx.Err() == nil && b.actx != nil && b.actx.Err() != nil {
		if c := context.Cause(b.actx); c != nil {
			var st errStalled
			if errors.As(c, &st) {
				return st
			}
		}
	}
	return err
}

func (b *blobReader) Read(p []byte) (int, error) {
	for {
		if b.err != nil {
			return 0, b.err
		}
		if b.rc == nil {
			if err := b.open(); err != nil {
				if !b.retry(b.cause(err)) {
					return 0, b.err
				}
				continue
			}
		}
		n, err := b.rc.Read(p)
		if n > 0 {
			b.off += int64(n)
			b.wd.touch()
		}
		if err == io.EOF && b.info.Size > 0 && b.off < b.info.Size {
			err = fmt.Errorf("%w at %d of %d bytes", errTruncated, b.off, b.info.Size)
		}
		switch {
		case err == nil, err == io.EOF:
			if err == io.EOF {
				b.endAttempt()
			}
			return n, err
		case n > 0:
			// Deliver what arrived; the failure is handled on the next call.
			// A final failure is sticky and returned by the next call.
			b.endAttempt()
			b.retry(b.cause(err))
			return n, nil
		default:
			b.endAttempt()
			if !b.retry(b.cause(err)) {
				return 0, b.err
			}
		}
	}
}

// retry decides on another attempt after err; without one it sets b.err.
func (b *blobReader) retry(err error) bool {
	again, ferr := b.r.failed(b.ctx, err, b.off > b.mark)
	if !again {
		b.err = ferr
	}
	return again
}

func (b *blobReader) Close() error {
	b.endAttempt()
	return nil
}

// openAt returns the blob's bytes from off on. Sources that serve byte
// ranges are asked for the rest only; others are re-read from the start
// and the prefix already delivered is skipped.
func openAt(ctx context.Context, isrc types.ImageSource, info types.BlobInfo, off int64, wd *watchdog) (io.ReadCloser, error) {
	if off > 0 {
		if rc, ok, err := getBlobFrom(ctx, isrc, info, off); ok {
			return rc, err
		}
	}
	rc, _, err := isrc.GetBlob(ctx, info, memory.New())
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if _, err := io.CopyN(io.Discard, &touchReader{rc, wd}, off); err != nil {
			rc.Close()
			return nil, err
		}
	}
	return rc, nil
}

// touchReader keeps the watchdog fed while a prefix is skipped.
type touchReader struct {
	r  io.Reader
	wd *watchdog
}

func (t *touchReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		t.wd.touch()
	}
	return n, err
}

// rangeEnd asks GetBlobAt for everything from an offset on.
const rangeEnd = math.MaxUint64
