package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/names"
)

// EgressPath is the file a backend appends a bottle's connection attempts
// to (sdk.Spec.EgressLog): beside its audit log, kept after cleanup like it.
// The directory is created so a backend can mount or open it.
func (l *Log) EgressPath(identity string) (string, error) {
	if !names.Valid(identity) {
		return "", fmt.Errorf("audit: invalid identity %q", identity)
	}
	if err := ensureDir(l.dir); err != nil {
		return "", err
	}
	dir := filepath.Join(l.dir, "egress")
	if err := ensureDir(dir); err != nil {
		return "", err
	}
	return filepath.Join(dir, identity+".jsonl"), nil
}

// ReadEgress returns the connection attempts a backend reported for
// identity, oldest first; lines that do not parse are skipped. No file
// means no attempts.
func (l *Log) ReadEgress(identity string) ([]sdk.EgressEvent, error) {
	if !names.Valid(identity) {
		return nil, fmt.Errorf("audit: invalid identity %q", identity)
	}
	path := filepath.Join(l.dir, "egress", identity+".jsonl")
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("egress log of %s: %w", identity, err)
	}
	defer f.Close()
	var out []sdk.EgressEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev sdk.EgressEvent
		// A request too malformed to name a host still has its reason, and
		// the proxy's count of refusals it left out of the log has no host.
		if json.Unmarshal(sc.Bytes(), &ev) == nil && (ev.Host != "" || ev.Reason != "") {
			out = append(out, ev)
		}
	}
	return out, sc.Err()
}
