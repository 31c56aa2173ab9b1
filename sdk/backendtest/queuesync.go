package backendtest

import (
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// ItemQueueSync is the contract of a backend with sdk.CapQueueSync.
const ItemQueueSync = "QueueSyncOnce"

// Names of the files the queue sync check writes: a request's file is
// <token>.json, its token 16 to 64 of [a-z0-9], and its decision has the
// same name in the outbox.
const (
	syncReqA    = "confsyncrequesta.json"
	syncReqB    = "confsyncrequestb.json"
	syncEcho    = "confsyncechoback.json"
	syncBig     = "confsyncoversize.json"
	syncLink    = "confsyncsymlinks.json"
	syncDir     = "confsyncdirector.json"
	syncBadName = "Not-A-Token.json"
	syncTemp    = ".confsyncpartial.json"
	// syncBigSize is over 1 MiB, which is above what any request may be
	// (the core's own limit is far lower): a backend may leave it behind.
	syncBigSize = 2<<20 + 1
)

// queueSync checks SyncQueue: the requests the agent writes in its inbox
// are collected into the host's inbox, once, by any number of syncs from
// two processes at once, and are not collected again once the host has
// decided them; files that are no request (a temp name, another name, a
// link, a directory, an oversized file) are not carried over and do not
// keep the others from it; a decision put in the host's outbox reaches the
// agent's outbox, one file with its content. The agent reports what it
// sees as a request of its own, so the check needs no exec.
func (r *run) queueSync(t *testing.T) {
	info := r.getInfo(t)
	qs, ok := r.be.(sdk.QueueSyncer)
	if !info.Has(sdk.CapQueueSync) || !ok {
		t.Skip("backend does not declare queue_sync")
	}
	ctx := r.ctx(t)
	q := t.TempDir()
	for _, d := range []string{sdk.QueueInbox, "outbox"} {
		if err := os.Mkdir(filepath.Join(q, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The guest paths are arguments so that a backend that maps guest
	// paths can see them. The junk goes first, so that by the time both
	// requests are collected the sync has passed over it.
	script := `q="$1"; in="$q/inbox"; out="$q/outbox"
head -c ` + strconv.Itoa(syncBigSize) + ` /dev/zero > "$in/` + syncBig + `"
ln -s /etc/passwd "$in/` + syncLink + `"
mkdir "$in/` + syncDir + `"
echo bad-name > "$in/` + syncBadName + `"
echo partial > "$in/` + syncTemp + `"
echo '{"conformance":"a"}' > "$in/.tmp-a" && mv "$in/.tmp-a" "$in/` + syncReqA + `"
echo '{"conformance":"b"}' > "$in/.tmp-b" && mv "$in/.tmp-b" "$in/` + syncReqB + `"
while [ ! -f "$out/` + syncReqB + `" ]; do sleep 0.2; done
{ echo "a=$(cat "$out/` + syncReqA + `")"; echo "outbox=$(ls "$out" | tr '\n' ' ')"; } > "$in/.tmp-e" && mv "$in/.tmp-e" "$in/` + syncEcho + `"
sleep 300`
	_, handle := r.launch(t, ctx, r.be, true, "sh", "-c", script, "sh", sdk.GuestQueueDir,
		func(s *sdk.Spec) { s.QueueDir = q })
	other := r.h.New(t).(sdk.QueueSyncer)

	inbox := filepath.Join(q, sdk.QueueInbox)
	syncUntil := func(what string, done func() bool) {
		t.Helper()
		deadline := time.Now().Add(r.h.Timeout / 2)
		for {
			if err := qs.SyncQueue(ctx, handle, q); err != nil {
				t.Fatalf("queue sync once: SyncQueue: %v", err)
			}
			if done() {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("queue sync once: %s; the host's inbox has %v", what, names(t, inbox))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	has := func(name string) bool { _, err := os.Lstat(filepath.Join(inbox, name)); return err == nil }
	syncUntil("the agent's two requests never reached the host's inbox (or the files that are no request kept them from it)",
		func() bool { return has(syncReqA) && has(syncReqB) })

	// Two processes sync at once, twice each: still one file a request.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, s := range []sdk.QueueSyncer{qs, other} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				if err := s.SyncQueue(ctx, handle, q); err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("queue sync once: SyncQueue from two processes at once: %v", err)
		}
	}
	if got, want := names(t, inbox), []string{syncReqA, syncReqB}; strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("queue sync once: after syncs from two processes the host's inbox has %v, want just %v (nothing that is no request: no temp name, other name, link, directory or file over 1 MiB)", got, want)
	}
	for name, want := range map[string]string{syncReqA: `{"conformance":"a"}`, syncReqB: `{"conformance":"b"}`} {
		if b, _ := os.ReadFile(filepath.Join(inbox, name)); strings.TrimSpace(string(b)) != want {
			t.Errorf("queue sync once: %s reached the host as %q, the agent wrote %q", name, b, want)
		}
	}

	// The host ingests A (it leaves the inbox, its decision is in the
	// outbox): no later sync brings A back.
	if err := os.Remove(filepath.Join(inbox, syncReqA)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(q, "outbox", syncReqA), `{"decision":"a"}`)
	for range 2 {
		if err := qs.SyncQueue(ctx, handle, q); err != nil {
			t.Fatalf("queue sync once: SyncQueue: %v", err)
		}
	}
	if has(syncReqA) {
		t.Errorf("queue sync once: %s came back into the host's inbox after the host decided it; a request is collected once", syncReqA)
	}
	// B's decision tells the agent to report its outbox.
	if err := os.Remove(filepath.Join(inbox, syncReqB)); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(q, "outbox", syncReqB), `{"decision":"b"}`)
	syncUntil("the agent never saw its decisions (the host's outbox did not reach the agent's)", func() bool { return has(syncEcho) })
	b, _ := os.ReadFile(filepath.Join(inbox, syncEcho))
	echo := string(b)
	if !strings.Contains(echo, `a={"decision":"a"}`) {
		t.Errorf("queue sync once: the agent read %q as the decision of %s, the host wrote %q", echo, syncReqA, `{"decision":"a"}`)
	}
	if !strings.Contains(echo, "outbox="+syncReqA+" "+syncReqB+" \n") {
		t.Errorf("queue sync once: the agent reports %q, want its outbox to hold exactly %s and %s, each once", echo, syncReqA, syncReqB)
	}
}

// names lists dir's entries, sorted.
func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func writeFile(t *testing.T, p, body string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}
