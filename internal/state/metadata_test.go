package state

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func sampleMetadata(id string) Metadata {
	return Metadata{
		Identity:  id,
		AgentName: "claude",
		Cwd:       "/home/user/project",
		CopyCwd:   true,
		StartedAt: "2026-01-02T03:04:05Z",
		Backend:   "smolmachines",
		Egress:    []string{"api.anthropic.com:443", "example.com"},
	}
}

func TestMetadataRoundTrip(t *testing.T) {
	s := newStore(t)
	id, err := s.Mint("claude", nil)
	if err != nil {
		t.Fatal(err)
	}
	in := sampleMetadata(id)
	if err := s.WriteMetadata(in); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReadMetadata(id)
	if err != nil {
		t.Fatal(err)
	}
	want := in
	want.SchemaVersion = SchemaVersion
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
	path := filepath.Join(s.Dir(id), "metadata.json")
	assertMode(t, path, 0o600)
	raw, _ := os.ReadFile(path)
	for _, key := range []string{`"schema_version": 1`, `"identity"`, `"agent_name"`, `"cwd"`, `"copy_cwd": true`, `"started_at"`, `"backend": "smolmachines"`, `"egress"`} {
		if !strings.Contains(string(raw), key) {
			t.Errorf("metadata.json lacks %s:\n%s", key, raw)
		}
	}
	// Overwriting leaves no temporary files behind.
	in.Backend = "docker"
	if err := s.WriteMetadata(in); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Dir(id))
	if len(entries) != 1 || entries[0].Name() != "metadata.json" {
		t.Errorf("state dir holds %v, want only metadata.json", entries)
	}
	if got, _ := s.ReadMetadata(id); got.Backend != "docker" {
		t.Errorf("overwrite not visible: backend %q", got.Backend)
	}
}

func TestWriteMetadataDefaults(t *testing.T) {
	s := newStore(t)
	if err := s.WriteMetadata(Metadata{Identity: "shell-aaaaa", AgentName: "shell"}); err != nil {
		t.Fatal(err)
	}
	m, err := s.ReadMetadata("shell-aaaaa")
	if err != nil {
		t.Fatal(err)
	}
	if m.Backend != "docker" || m.SchemaVersion != SchemaVersion || m.StartedAt == "" {
		t.Fatalf("defaults not applied: %+v", m)
	}
	raw, _ := os.ReadFile(filepath.Join(s.Dir("shell-aaaaa"), "metadata.json"))
	if !strings.Contains(string(raw), `"backend": "docker"`) {
		t.Errorf("empty backend not recorded as docker:\n%s", raw)
	}
}

func TestWriteMetadataRefusesBadInput(t *testing.T) {
	s := newStore(t)
	cases := map[string]Metadata{
		"invalid identity": {Identity: "../evil"},
		"empty identity":   {},
		"relative cwd":     {Identity: "a-aaaaa", Cwd: "project"},
		"bad started_at":   {Identity: "a-aaaaa", StartedAt: "yesterday"},
	}
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			err := s.WriteMetadata(m)
			assertOneLine(t, err)
			if _, err := os.Lstat(filepath.Join(s.Dir("a-aaaaa"), "metadata.json")); !os.IsNotExist(err) {
				t.Errorf("metadata written despite error")
			}
		})
	}
	if _, err := os.Lstat(filepath.Join(s.Home(), "evil")); !os.IsNotExist(err) {
		t.Errorf("path traversal created %s", filepath.Join(s.Home(), "evil"))
	}
}

func writeRaw(t *testing.T, s *Store, id, content string) {
	t.Helper()
	if _, err := os.Lstat(s.Dir(id)); os.IsNotExist(err) {
		mkBottle(t, s, id)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(id), "metadata.json"), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestReadOldMetadataWithoutBackend(t *testing.T) {
	s := newStore(t)
	writeRaw(t, s, "claude-old12", `{"identity":"claude-old12","agent_name":"claude","cwd":"","copy_cwd":false,"started_at":"2025-05-01T10:00:00+02:00"}`)
	m, err := s.ReadMetadata("claude-old12")
	if err != nil {
		t.Fatal(err)
	}
	if m.Backend != "docker" {
		t.Fatalf("backend %q, want docker", m.Backend)
	}
	if m.AgentName != "claude" || m.SchemaVersion != 0 {
		t.Fatalf("unexpected %+v", m)
	}
}

func TestReadMetadataToleratesUnknownAndMissingFields(t *testing.T) {
	s := newStore(t)
	writeRaw(t, s, "codex-x1y2z", `{
		"schema_version": 7,
		"agent_name": "codex",
		"backend": "podman",
		"future_field": {"nested": [1, 2, 3]},
		"another": null
	}`)
	m, err := s.ReadMetadata("codex-x1y2z")
	if err != nil {
		t.Fatal(err)
	}
	want := Metadata{SchemaVersion: 7, Identity: "codex-x1y2z", AgentName: "codex", Backend: "podman"}
	if !reflect.DeepEqual(m, want) {
		t.Fatalf("got %+v, want %+v", m, want)
	}
}

func TestReadCorruptMetadata(t *testing.T) {
	good := `{"schema_version":1,"identity":"claude-abcde","agent_name":"claude","backend":"docker","started_at":"2026-01-02T03:04:05Z"}`
	cases := map[string]func(t *testing.T, s *Store, path string){
		"truncated": func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", good[:len(good)/2]) },
		"garbage": func(t *testing.T, s *Store, path string) {
			writeRaw(t, s, "claude-abcde", "not json at all\nsecond line")
		},
		"empty":         func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", "") },
		"null":          func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", "null") },
		"array":         func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", "[1,2]") },
		"trailing junk": func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", good+"}") },
		"wrong type":    func(t *testing.T, s *Store, path string) { writeRaw(t, s, "claude-abcde", `{"copy_cwd":"yes"}`) },
		"other identity": func(t *testing.T, s *Store, path string) {
			writeRaw(t, s, "claude-abcde", `{"identity":"claude-zzzzz"}`)
		},
		"symlink": func(t *testing.T, s *Store, path string) {
			mkBottle(t, s, "claude-abcde")
			target := filepath.Join(t.TempDir(), "elsewhere.json")
			if err := os.WriteFile(target, []byte(good), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		},
		"directory": func(t *testing.T, s *Store, path string) {
			mkBottle(t, s, "claude-abcde")
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		},
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			path := filepath.Join(s.Dir("claude-abcde"), "metadata.json")
			setup(t, s, path)
			before := treeSnapshot(t, s.Home())

			_, err := s.ReadMetadata("claude-abcde")
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadMetadata = %v, want ErrCorrupt", err)
			}
			assertOneLine(t, err)
			if want := "metadata for claude-abcde is corrupt (" + path + "): "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("message %q, want prefix %q", err, want)
			}

			list, broken, err := s.Scan()
			if err != nil {
				t.Fatal(err)
			}
			if len(list) != 0 || len(broken) != 1 || broken[0].Identity != "claude-abcde" || !errors.Is(broken[0].Err, ErrCorrupt) {
				t.Errorf("Scan = %v, %v; want the bottle reported broken", list, broken)
			}
			if l, err := s.List(); err != nil || len(l) != 0 {
				t.Errorf("List = %v, %v; want corrupt bottle skipped", l, err)
			}
			_, _ = s.ReadHandle("claude-abcde")
			_, _ = s.IsPreserved("claude-abcde")
			_, _ = s.ReadCommittedImage("claude-abcde")
			_ = s.HasTranscript("claude-abcde")
			_, _ = s.DockerfilePath("claude-abcde")

			if after := treeSnapshot(t, s.Home()); after != before {
				t.Errorf("reading changed the state dir:\nbefore:\n%s\nafter:\n%s", before, after)
			}
		})
	}
}

func TestReadMetadataJSONErrorIsWrapped(t *testing.T) {
	s := newStore(t)
	writeRaw(t, s, "claude-abcde", `{"identity": "claude-abcde",`)
	_, err := s.ReadMetadata("claude-abcde")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unexpected end of JSON input") {
		t.Fatalf("got %v, want ErrCorrupt carrying the JSON error", err)
	}
}

func TestNoBottle(t *testing.T) {
	s := newStore(t)
	_, err := s.ReadMetadata("claude-zzzzz")
	if !errors.Is(err, ErrNoBottle) {
		t.Fatalf("got %v, want ErrNoBottle", err)
	}
	if want := `no bottle "claude-zzzzz"; no bottles yet`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}

	for _, id := range []string{"shell-bbbbb", "claude-aaaaa"} {
		if err := s.WriteMetadata(Metadata{Identity: id, AgentName: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	mkBottle(t, s, "half-minted") // no metadata: not something to resume
	_, err = s.ReadMetadata("claude-zzzzz")
	if !errors.Is(err, ErrNoBottle) {
		t.Fatalf("got %v, want ErrNoBottle", err)
	}
	if want := `no bottle "claude-zzzzz"; known: claude-aaaaa, shell-bbbbb`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	// A state dir without metadata is also "no bottle".
	if _, err := s.ReadMetadata("half-minted"); !errors.Is(err, ErrNoBottle) {
		t.Errorf("dir without metadata: %v, want ErrNoBottle", err)
	}
	if _, err := s.ReadMetadata("../claude-aaaaa"); !errors.Is(err, ErrInvalidIdentity) {
		t.Errorf("traversal: %v, want ErrInvalidIdentity", err)
	}
}

func TestNoBottleListIsCapped(t *testing.T) {
	s := newStore(t)
	for i := range 25 {
		if err := s.WriteMetadata(Metadata{Identity: "a-" + padBase36(int64(i)), AgentName: "a"}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.ReadMetadata("b-00000")
	assertOneLine(t, err)
	if !strings.HasSuffix(err.Error(), "(and 5 more)") {
		t.Errorf("message %q should cap the list", err)
	}
}

func TestIdentitiesAndList(t *testing.T) {
	s := newStore(t)
	for _, id := range []string{"shell-ccccc", "claude-aaaaa", "codex-bbbbb"} {
		m := sampleMetadata(id)
		if err := s.WriteMetadata(m); err != nil {
			t.Fatal(err)
		}
	}
	mkBottle(t, s, "empty-ddddd")
	// Things that are not bottles.
	if err := os.Mkdir(filepath.Join(s.Home(), "state", "Upper-Case"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Home(), "state", "file-eeeee"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(s.Home(), "state", "link-fffff")); err != nil {
		t.Fatal(err)
	}

	ids, err := s.Identities()
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"claude-aaaaa", "codex-bbbbb", "empty-ddddd", "shell-ccccc"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("Identities = %v, want %v", ids, want)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.Identity)
	}
	if want := []string{"claude-aaaaa", "codex-bbbbb", "shell-ccccc"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	_, broken, err := s.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if len(broken) != 1 || broken[0].Identity != "empty-ddddd" || !errors.Is(broken[0].Err, ErrNoBottle) {
		t.Fatalf("Scan broken = %+v, want empty-ddddd without metadata", broken)
	}
}

// Readers running alongside writers must only ever see a whole file.
func TestConcurrentWritesAreAtomic(t *testing.T) {
	s := newStore(t)
	const id = "claude-aaaaa"
	long := make([]string, 200)
	for i := range long {
		long[i] = "host-" + padBase36(int64(i)) + ".example:443"
	}
	variants := []Metadata{sampleMetadata(id), sampleMetadata(id)}
	variants[1].Egress = long
	if err := s.WriteMetadata(variants[0]); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan error, 8)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := s.WriteMetadata(variants[(i+w)%2]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 500 {
		m, err := s.ReadMetadata(id)
		if err != nil {
			t.Errorf("reader saw %v", err)
			break
		}
		if len(m.Egress) != 2 && len(m.Egress) != len(long) {
			t.Errorf("reader saw a partial egress list of %d", len(m.Egress))
			break
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("writer: %v", err)
	}
	entries, _ := os.ReadDir(s.Dir(id))
	if len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}
}
