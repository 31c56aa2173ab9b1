package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// The VMM of a machine with an egress policy appends one line per refused
// connect, sendto or name lookup to egress-denials.log in the machine's data
// dir (`machine data-dir`); `machine egress-events` reads them back. The fake
// has no VMM: a test stands in for it and appends lines in the VMM's format,
// e.g. "[2026-08-13T02:31:05Z]: egress policy denied connect to 10.0.0.7:443".

// denialsLog is the log's name in the data dir (smolvm_network's
// EGRESS_DENIALS_LOG).
const denialsLog = "egress-denials.log"

// denialScanBytes is how much of the log's tail egress-events reads.
const denialScanBytes = 256 * 1024

// dataDir is smolvm's vm_data_dir: derived from a hash of the name, so any
// name maps to a path inside the state dir.
func (s *store) dataDir(name string) string {
	sum := sha256.Sum256([]byte(name))
	return filepath.Join(s.dir, "vms", hex.EncodeToString(sum[:])[:16])
}

// egressDenial is smolvm's EgressDenial, serialised as is.
type egressDenial struct {
	Timestamp string `json:"timestamp"`
	Operation string `json:"operation"`
	Dest      string `json:"dest"`
}

// cmdEgressEvents is EgressEventsCmd: -n/--name (default "default", not
// validated and not looked up: an unknown machine has no denials),
// --limit N (newest kept, default 200), --json (pretty JSON array).
func cmdEgressEvents(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag, {long: "limit", value: true}, {long: "json"}}, 0)
	if err != nil {
		return err
	}
	name := p.get("name")
	if name == "" {
		name = "default"
	}
	limit := 200
	if p.has("limit") {
		v := p.get("limit")
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return usagef("invalid value '%s' for '--limit <LIMIT>': invalid digit found in string", v)
		}
		limit = int(n)
	}
	events := readDenials(filepath.Join(st.dataDir(name), denialsLog), limit)
	if p.has("json") {
		if events == nil {
			events = []egressDenial{}
		}
		return printJSON(events)
	}
	if len(events) == 0 {
		fmt.Printf("No egress denials recorded for '%s'.\n", name)
		return nil
	}
	fmt.Printf("%-30s %-9s DESTINATION\n", "TIMESTAMP", "OP")
	for _, e := range events {
		fmt.Printf("%-30s %-9s %s\n", e.Timestamp, e.Operation, e.Dest)
	}
	return nil
}

// readDenials is read_egress_denials: the log's tail, parsed line by line,
// the newest limit kept. No log (never booted) means no denials.
func readDenials(path string, limit int) []egressDenial {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > denialScanBytes {
		if _, err := f.Seek(-denialScanBytes, io.SeekEnd); err != nil {
			return nil
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil
	}
	var out []egressDenial
	for _, line := range strings.Split(string(b), "\n") {
		if d, ok := parseDenialLine(line); ok {
			out = append(out, d)
		}
	}
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return out
}

// parseDenialLine is parse_egress_denial_line: anchored on the marker, the
// operation one of connect/sendto/resolve, the timestamp the first token of
// a leading "[…]".
func parseDenialLine(line string) (egressDenial, bool) {
	const marker = "egress policy denied "
	i := strings.Index(line, marker)
	if i < 0 {
		return egressDenial{}, false
	}
	op, rest, ok := strings.Cut(line[i+len(marker):], " ")
	if !ok || (op != "connect" && op != "sendto" && op != "resolve") {
		return egressDenial{}, false
	}
	dest := strings.TrimSpace(strings.TrimPrefix(rest, "to "))
	if dest == "" {
		return egressDenial{}, false
	}
	ts := ""
	if r, ok := strings.CutPrefix(line, "["); ok {
		if f := strings.Fields(r); len(f) > 0 {
			ts = strings.TrimRight(strings.TrimRight(f[0], ":"), "]")
		}
	}
	return egressDenial{Timestamp: ts, Operation: op, Dest: dest}, true
}

// cmdDataDir is DataDirCmd: -n/--name is required and the machine must
// exist.
func cmdDataDir(st *store, args []string) error {
	p, err := parseFlags(args, []flagSpec{nameFlag}, 0)
	if err != nil {
		return err
	}
	if !p.has("name") {
		return usagef("the following required arguments were not provided:\n  --name <NAME>")
	}
	name := p.get("name")
	if _, err := st.load(name); err != nil {
		return err
	}
	// vm_data_dir (src/agent/manager.rs:235), printed whether or not it
	// exists yet.
	fmt.Println(st.dataDir(name))
	return nil
}
