package backend

// Egress audit. smolvm enforces a machine's allow-list itself (--allow-host
// at create; it cannot be changed later, so approvals apply at the next
// resume) and records what it refused, which `machine egress-events` lists.
// The plugin copies those refusals into the bottle's egress log
// (sdk.Spec.EgressLog) as sdk.EgressEvent lines:
//
//   - when the bottle is listed (bot-bottle list, the dashboard), and
//   - right before Stop deletes the machine, which takes smolvm's record
//     with it.
//
// smolvm reports refusals only: allowed connections are not visible to the
// plugin. The log path travels in the handle and in a machine label, so a
// Stop without a handle and List find it too. Each import appends only what
// the log does not hold yet, so importing again never duplicates.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/bot-bottle/bot-bottle/plugins/smolmachines/internal/smolvm"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// LabelEgressLog is the machine label that holds the bottle's egress log.
const LabelEgressLog = "dev.bot-bottle.egress-log"

// denialLimit is how many of the newest refusals one import asks smolvm
// for; smolvm itself scans the last 256 KiB of its log (a few thousand).
const denialLimit = 10000

// reasonPrefix marks the events this plugin imported from smolvm, so that a
// later import knows which lines of the log are its own.
const reasonPrefix = "refused by smolvm's egress policy"

// checkEgressLog validates the egress log path the core handed over.
func checkEgressLog(path string) error {
	if path != "" && (!filepath.IsAbs(path) || filepath.Clean(path) != path) {
		return fmt.Errorf("egress log %q is not a clean absolute path", path)
	}
	return nil
}

// egressLogOf returns the egress log a machine's label names, if it is one
// this plugin would have set for that identity (an absolute path ending in
// <identity>.jsonl), else "".
func egressLogOf(identity string, labels map[string]string) string {
	p := labels[LabelEgressLog]
	if p == "" || !filepath.IsAbs(p) || filepath.Base(p) != identity+".jsonl" || filepath.Clean(p) != p {
		return ""
	}
	return p
}

// denialEvent turns one smolvm refusal into an egress event.
func denialEvent(identity string, d smolvm.EgressDenial) sdk.EgressEvent {
	ev := sdk.EgressEvent{Time: d.Timestamp, Identity: identity, Allowed: false, Method: d.Operation}
	switch d.Operation {
	case "resolve":
		ev.Host = d.Dest
		ev.Reason = reasonPrefix + ": its DNS filter refused the name (not in the allowlist)"
	default:
		ev.Host = d.Dest
		if h, p, err := net.SplitHostPort(d.Dest); err == nil {
			ev.Host = h
			ev.Port, _ = strconv.Atoi(p)
		}
		ev.Reason = reasonPrefix + ": " + d.Operation + " to an address no allowed host resolved to"
	}
	return ev
}

func eventKey(ev sdk.EgressEvent) string {
	return ev.Time + "\x00" + ev.Method + "\x00" + ev.Host + "\x00" + strconv.Itoa(ev.Port)
}

// importDenials appends the machine's refusals that path does not hold yet
// and returns how many it appended. It holds an exclusive lock on the log
// meanwhile, so that two imports (a List and a Stop) never both append the
// same refusal.
func importDenials(ctx context.Context, cli *smolvm.CLI, machine, identity, path string) (int, error) {
	if path == "" {
		return 0, nil
	}
	denials, err := cli.EgressEvents(ctx, machine, denialLimit)
	if err != nil {
		return 0, err
	}
	if len(denials) == 0 {
		return 0, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return 0, fmt.Errorf("egress log: %w", err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return 0, fmt.Errorf("egress log %s is not a regular file", path)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		return 0, fmt.Errorf("lock egress log: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)

	// What earlier imports wrote, counted, so that equal refusals (same
	// time, operation and destination) are each kept once.
	have := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var ev sdk.EgressEvent
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Identity == identity && strings.HasPrefix(ev.Reason, reasonPrefix) {
			have[eventKey(ev)]++
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("read egress log: %w", err)
	}
	var out []byte
	n := 0
	for _, d := range denials {
		ev := denialEvent(identity, d)
		if k := eventKey(ev); have[k] > 0 {
			have[k]--
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return 0, err
		}
		out = append(append(out, b...), '\n')
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if _, err := f.Write(out); err != nil {
		return 0, fmt.Errorf("append to egress log: %w", err)
	}
	return n, nil
}

// importQuietly imports and logs instead of failing: a lost audit import
// must not keep a bottle from being listed or stopped.
func (b *Backend) importQuietly(ctx context.Context, cli *smolvm.CLI, machine, identity, path string) {
	n, err := importDenials(ctx, cli, machine, identity, path)
	if err != nil {
		b.log.Warn("could not import egress refusals into the audit", "identity", identity, "machine", machine, "error", err)
		return
	}
	if n > 0 {
		b.log.Debug("imported egress refusals", "identity", identity, "machine", machine, "count", n)
	}
}
