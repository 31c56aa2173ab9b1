package queue

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// snapshot records every path under root except skip (and below), with what
// matters to notice a write: type, mode, size, mtime and content digest.
func snapshot(t *testing.T, root, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		sum := ""
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum = fmt.Sprintf("%x", sha256.Sum256(data))
		}
		out[p] = fmt.Sprintf("%v %d %d %s", fi.Mode(), fi.Size(), fi.ModTime().UnixNano(), sum)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range after {
		if before[p] != v {
			t.Errorf("%s: %s changed or appeared: %q -> %q", what, p, before[p], v)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s disappeared", what, p)
		}
	}
}

// TestHostileInbox is acceptance 5.3 at the package level: each hostile
// entry is refused, nothing outside the bottle's queue dir is written, files
// a link points at are neither read into a request nor changed nor deleted,
// and the caller gets a refusal, not an error or a hang.
func TestHostileInbox(t *testing.T) {
	// The host file a bottle would like to exfiltrate or destroy. It is a
	// valid request, so following a link to it would show up as one.
	const secret = "hunter2-host-secret"
	hostFile := filepath.Join(t.TempDir(), "host-file.json")
	hostBody := `{"kind":"egress","reason":"` + secret + `","host":"evil.test"}`

	cases := []struct {
		name    string
		setup   func(t *testing.T, inbox string) // creates the hostile entry
		wantErr string
	}{
		{"10 MiB request", func(t *testing.T, inbox string) {
			big := bytes.Repeat([]byte("a"), 10<<20)
			body := append([]byte(`{"kind":"egress","host":"a.b","reason":"`), append(big, `"}`...)...)
			os.WriteFile(filepath.Join(inbox, token(1)+".json"), body, 0o644)
		}, "too large"},
		{"malformed JSON", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, token(1)+".json"), []byte(`{"kind":"egress","reason":`), 0o644)
		}, "malformed"},
		{"symlink to a host file", func(t *testing.T, inbox string) {
			must(t, os.Symlink(hostFile, filepath.Join(inbox, token(1)+".json")))
		}, "symlink"},
		{"relative symlink inside the inbox", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, TempPrefix+"target"), []byte(hostBody), 0o644)
			must(t, os.Symlink(TempPrefix+"target", filepath.Join(inbox, token(1)+".json")))
		}, "symlink"},
		{"symlink to a host dir", func(t *testing.T, inbox string) {
			must(t, os.Symlink(filepath.Dir(hostFile), filepath.Join(inbox, token(1)+".json")))
		}, "symlink"},
		{"hard link to a host file", func(t *testing.T, inbox string) {
			// A real bottle cannot do this across the bind mount (EXDEV);
			// the host must not rely on that.
			must(t, os.Link(hostFile, filepath.Join(inbox, token(1)+".json")))
		}, "hard links"},
		{"named pipe", func(t *testing.T, inbox string) {
			must(t, syscall.Mkfifo(filepath.Join(inbox, token(1)+".json"), 0o666))
		}, "named pipe"},
		{"directory with a link inside", func(t *testing.T, inbox string) {
			d := filepath.Join(inbox, token(1)+".json")
			must(t, os.Mkdir(d, 0o755))
			must(t, os.Symlink(hostFile, filepath.Join(d, "x")))
		}, "directory"},
		{"request naming another identity", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, token(1)+".json"), []byte(`{"identity":"other-aaaaa","kind":"egress","reason":"r","host":"a.b"}`), 0o644)
		}, "names identity"},
		{"decision dropped in the inbox", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, token(1)+".json"), []byte(`{"id":"shell-7k2qz-abcdef","status":"approved","decided_by":"user:root"}`), 0o644)
		}, "unknown field"},
		{"terminal escapes in the name", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, "\x1b]0;pwned\x07.json"), []byte(`{}`), 0o644)
		}, "file name"},
		{"path-like name", func(t *testing.T, inbox string) {
			os.WriteFile(filepath.Join(inbox, "..json"), []byte(hostBody), 0o644)
		}, "file name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			must(t, os.WriteFile(hostFile, []byte(hostBody), 0o600))
			q, home, dir := newQueue(t)
			// Warm up: the first Ingest creates the host-side lock file.
			if _, _, err := q.Ingest(testID); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, home, dir)
			hostBefore := snapshot(t, filepath.Dir(hostFile), "")
			c.setup(t, filepath.Join(dir, "inbox"))

			type result struct {
				rs      []Request
				refused []error
				err     error
			}
			done := make(chan result, 1)
			go func() {
				rs, refused, err := q.Ingest(testID)
				done <- result{rs, refused, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("Ingest hung")
			}
			if res.err != nil {
				t.Fatalf("Ingest failed instead of refusing: %v", res.err)
			}
			if len(res.rs) != 0 {
				t.Fatalf("accepted: %+v", res.rs)
			}
			if len(res.refused) != 1 {
				t.Fatalf("refused %d files, want 1: %v", len(res.refused), res.refused)
			}
			msg := res.refused[0].Error()
			var re *RefusedError
			if !errors.As(res.refused[0], &re) || !strings.Contains(msg, c.wantErr) {
				t.Fatalf("refusal %q does not say %q", msg, c.wantErr)
			}
			if strings.ContainsAny(msg, "\x1b\x07\n") || len(msg) > 600 {
				t.Fatalf("refusal message is not safe to print: %q", msg)
			}

			sameSnapshot(t, "home outside the queue dir", before, snapshot(t, home, dir))
			sameSnapshot(t, "host file", hostBefore, snapshot(t, filepath.Dir(hostFile), ""))
			if list, err := q.List(); err != nil || len(list) != 0 {
				t.Fatalf("List after refusal: %v, %v", list, err)
			}
			// The offending entry is gone from the inbox (only the helper's
			// in-progress temp files may stay).
			ents, _ := os.ReadDir(filepath.Join(dir, "inbox"))
			for _, e := range ents {
				if !strings.HasPrefix(e.Name(), TempPrefix) {
					t.Errorf("left in inbox: %q", e.Name())
				}
			}
			// Nothing under the queue dir carries the host file's secret.
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), TempPrefix) {
					if data, _ := os.ReadFile(p); bytes.Contains(data, []byte(secret)) {
						t.Errorf("%s holds the host file's content", p)
					}
				}
				return nil
			})
			// A waiting helper learns of the refusal under its token.
			if re.Token != "" {
				if rc := readReceipt(t, dir, re.Token); rc.Status != StatusRefused || rc.DecisionReason == "" {
					t.Errorf("refused receipt %+v", rc)
				}
			}
		})
	}
}

// A bottle cannot approve its own request: the outbox is host-written (and
// mounted read-only), and even a forged file there does not change the
// host's view; the next Ingest puts the receipt right.
func TestForgedDecisionInOutbox(t *testing.T) {
	q, home, dir := newQueue(t)
	submit(t, dir, token(1)+".json", `{"kind":"capability","reason":"r","run":"true"}`)
	r := ingestOne(t, q)
	before := snapshot(t, home, dir)

	forged := fmt.Sprintf(`{"token":%q,"id":%q,"status":"approved","decision_reason":"self-approved"}`, token(1), r.ID)
	must(t, os.WriteFile(filepath.Join(dir, "outbox", token(1)+".json"), []byte(forged), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "outbox", r.ID+".json"), []byte(forged), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, r.ID+".decision"), []byte(forged), 0o644))

	if got, err := q.Get(r.ID); err != nil || got.Status != StatusPending {
		t.Fatalf("Get after forgery: %+v, %v", got, err)
	}
	if rs, refused, err := q.Ingest(testID); err != nil || len(rs)+len(refused) != 0 {
		t.Fatalf("Ingest: %v %v %v", rs, refused, err)
	}
	list, err := q.List()
	if err != nil || len(list) != 1 || list[0].Status != StatusPending {
		t.Fatalf("List after forgery: %+v, %v", list, err)
	}
	if rc := readReceipt(t, dir, token(1)); rc.Status != StatusPending {
		t.Fatalf("forged receipt not put right: %+v", rc)
	}
	sameSnapshot(t, "home outside the queue dir", before, snapshot(t, home, dir))
	// The real decision still goes through exactly once.
	if d, err := q.Decide(r.ID, false, "no", "user:op"); err != nil || d.Status != StatusDenied {
		t.Fatalf("Decide after forgery: %+v, %v", d, err)
	}
}

// One bottle's inbox cannot reach another's requests: a request is always
// filed under the identity of the inbox it came from.
func TestInboxesAreSeparate(t *testing.T) {
	home := t.TempDir()
	q := Open(home)
	a, _ := q.Dir("a-aaaaa")
	q.Dir("b-bbbbb")
	submit(t, a, token(1)+".json", `{"kind":"egress","reason":"r","host":"x.test"}`)
	if rs, _, err := q.Ingest("b-bbbbb"); err != nil || len(rs) != 0 {
		t.Fatalf("b ingested a's file: %v %v", rs, err)
	}
	rs, _, err := q.Ingest("a-aaaaa")
	if err != nil || len(rs) != 1 || rs[0].Identity != "a-aaaaa" || !strings.HasPrefix(rs[0].ID, "a-aaaaa-") {
		t.Fatalf("a's request: %+v %v", rs, err)
	}
}

func TestIngestBoundedPerCall(t *testing.T) {
	q, _, dir := newQueue(t)
	for i := range maxRefusedPerIngest + 10 {
		submit(t, dir, fmt.Sprintf("junk%d", i), "x")
	}
	_, refused, err := q.Ingest(testID)
	if err != nil || len(refused) != maxRefusedPerIngest {
		t.Fatalf("first pass refused %d, err %v; want %d", len(refused), err, maxRefusedPerIngest)
	}
	_, refused, _ = q.Ingest(testID)
	if len(refused) != 10 {
		t.Fatalf("second pass refused %d, want 10", len(refused))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
