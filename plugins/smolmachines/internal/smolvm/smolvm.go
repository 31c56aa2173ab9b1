// Package smolvm drives the smolvm command-line tool: it runs its
// subcommands, turns its `Error: …` lines into Go errors and parses its JSON.
// It knows smolvm's contract (names, flags, output shapes, exit codes, error
// texts), written down with smolvm's source locations in contract.go, and
// nothing about bot-bottle.
package smolvm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// InstallHint tells an operator how to make smolvm available to the plugin.
const InstallHint = `install smolvm (github.com/smol-machines/smolvm) or set config { smolvm = "/path/to/smolvm" } in the plugin "smolmachines" block of plugins.hcl`

// ErrNotInstalled says the smolvm executable could not be found.
var ErrNotInstalled = errors.New("smolvm not found")

// Locate returns the absolute path of the smolvm executable: configured when
// it is set (a path, or a bare name looked up on $PATH), else `smolvm` on
// $PATH.
func Locate(configured string) (string, error) {
	if configured == "" {
		p, err := exec.LookPath("smolvm")
		if err != nil {
			return "", fmt.Errorf("%w on $PATH: %s", ErrNotInstalled, InstallHint)
		}
		return filepath.Abs(p)
	}
	p, err := exec.LookPath(configured)
	if err != nil {
		return "", fmt.Errorf("%w at %q (config smolvm in plugins.hcl): %s", ErrNotInstalled, configured, InstallHint)
	}
	return filepath.Abs(p)
}

// CLI runs one smolvm executable.
type CLI struct {
	// Path is the absolute path of the executable.
	Path string
	// Env is added to the inherited environment of every smolvm process.
	// Secret values for --secret-env live here and nowhere else.
	Env []string
}

// Error is a failed smolvm invocation. Msg is smolvm's own message: the text
// after `Error: ` (or clap's `error: `) on stderr.
type Error struct {
	Args []string
	Code int
	Msg  string
}

func (e *Error) Error() string { return "smolvm: " + e.Msg }

// IsNotFound reports whether err is smolvm saying a machine does not exist.
// smolvm words that three ways depending on the command (see
// NotFoundMessages); other "not found" messages (an image missing on the
// host, a file in the guest) are other failures.
func IsNotFound(err error) bool {
	var e *Error
	if !errors.As(err, &e) || e.Code != 1 {
		return false
	}
	for _, m := range NotFoundMessages {
		if m.Match(e.Msg) {
			return true
		}
	}
	return false
}

// Command returns an exec.Cmd for smolvm with args and the CLI's
// environment, for callers that wire its stdio themselves (a pty, pipes).
func (c *CLI) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Path, args...)
	cmd.Env = append(os.Environ(), c.Env...)
	return cmd
}

// Output runs smolvm with no stdin (so a prompt reads EOF and never blocks)
// and returns stdout. A non-zero exit becomes an *Error.
func (c *CLI) Output(ctx context.Context, args ...string) ([]byte, error) {
	stdout, _, err := c.run(ctx, nil, args...)
	return stdout, err
}

// OutputStdin is Output with stdin fed from r.
func (c *CLI) OutputStdin(ctx context.Context, r io.Reader, args ...string) ([]byte, error) {
	stdout, _, err := c.run(ctx, r, args...)
	return stdout, err
}

// Exec runs a buffered `machine exec` and returns the guest's exit code.
// Exit code 1 is ambiguous (smolvm's errors and the guest's both use it), so
// it asks `status` whether the machine is still running before it believes
// the guest.
func (c *CLI) Exec(ctx context.Context, name string, stdin io.Reader, args ...string) (code int, stdout, stderr []byte, err error) {
	full := append([]string{"machine", "exec", "--name", name}, args...)
	stdout, stderr, err = c.run(ctx, stdin, full...)
	var e *Error
	if err == nil {
		return 0, stdout, stderr, nil
	}
	if !errors.As(err, &e) || e.Code < 0 {
		return 0, stdout, stderr, err
	}
	if e.Code == 1 {
		if serr := c.CheckRunning(ctx, name); serr != nil {
			return 0, stdout, stderr, fmt.Errorf("%w (%v)", err, serr)
		}
	}
	return e.Code, stdout, stderr, nil
}

// CheckRunning returns nil when the machine exists and is running.
func (c *CLI) CheckRunning(ctx context.Context, name string) error {
	m, err := c.Status(ctx, name)
	if err != nil {
		return err
	}
	if m.State != StateRunning {
		return fmt.Errorf("machine %s is %s", name, m.State)
	}
	return nil
}

func (c *CLI) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, []byte, error) {
	cmd := c.Command(ctx, args...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err := cmd.Run()
	if err == nil {
		return out.Bytes(), errb.Bytes(), nil
	}
	if ctx.Err() != nil {
		return out.Bytes(), errb.Bytes(), ctx.Err()
	}
	var xe *exec.ExitError
	if !errors.As(err, &xe) {
		return out.Bytes(), errb.Bytes(), fmt.Errorf("run smolvm %s: %w", strings.Join(firstWords(args), " "), err)
	}
	return out.Bytes(), errb.Bytes(), &Error{Args: args, Code: xe.ExitCode(), Msg: ErrorMessage(errb.Bytes(), xe.ExitCode())}
}

// firstWords keeps the subcommand words of args for an error message.
func firstWords(args []string) []string {
	for i, a := range args {
		if strings.HasPrefix(a, "-") {
			return args[:i]
		}
	}
	return args
}

// ErrorMessage extracts smolvm's message from its stderr as one line: from
// the last `Error: …` line to the end (runtime errors; smolvm prints the
// error last and exits, and some messages run over several lines, which are
// joined with spaces), or the first `error: …` line (argument errors from
// clap), else the last non-empty line.
func ErrorMessage(stderr []byte, code int) string {
	lines := strings.Split(strings.ReplaceAll(string(stderr), "\r\n", "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		rest, ok := strings.CutPrefix(strings.TrimSpace(lines[i]), "Error: ")
		if !ok {
			continue
		}
		parts := []string{rest}
		for _, l := range lines[i+1:] {
			if l = strings.TrimSpace(l); l != "" {
				parts = append(parts, l)
			}
		}
		return strings.Join(parts, " ")
	}
	for _, l := range lines {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(l), "error: "); ok {
			return rest
		}
	}
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" {
			return l
		}
	}
	return fmt.Sprintf("exited with code %d and no message", code)
}

// Version returns what `smolvm --version` prints, e.g. "1.9.2".
func (c *CLI) Version(ctx context.Context) (string, error) {
	out, err := c.Output(ctx, "--version")
	if err != nil {
		return "", fmt.Errorf("smolvm --version: %w", err)
	}
	v := strings.TrimSpace(string(out))
	v = strings.TrimPrefix(v, "smolvm ")
	return v, nil
}

// Machine states reported by status and ls.
const (
	StateCreated     = "created"
	StateRunning     = "running"
	StateStopped     = "stopped"
	StateFailed      = "failed"
	StateUnreachable = "unreachable"
	StateFrozen      = "frozen"
)

// Machine is the object `machine ls --json` and `machine status --json`
// return (MachineFields has them all, with their JSON types). Only the fields
// the plugin reads are typed; the rest are ignored, and a null leaves a field
// at its zero value, so a smolvm that adds or drops a field still parses.
type Machine struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	CPUs      int               `json:"cpus"`
	MemoryMiB int               `json:"memory_mib"`
	PID       *int              `json:"pid"`
	CreatedAt Timestamp         `json:"created_at"`
	Image     *string           `json:"image"`
	Labels    map[string]string `json:"labels"`
	Network   bool              `json:"network"`
}

// Timestamp is smolvm's created_at: seconds since the Unix epoch, a JSON
// number (u64). Records written by older smolvm versions hold it as a string
// of digits, which smolvm itself still reads (deserialize_timestamp), so
// both parse; null or "" is 0, unknown.
type Timestamp uint64

// UnmarshalJSON accepts a non-negative integer or a string of digits.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "null" {
		*t = 0
		return nil
	}
	if strings.HasPrefix(s, `"`) {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		if str == "" {
			*t = 0
			return nil
		}
		s = str
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("created_at %s is neither a number of seconds nor a string of digits", b)
	}
	*t = Timestamp(n)
	return nil
}

// Time is t as a time, the zero time when t is 0 (unknown).
func (t Timestamp) Time() time.Time {
	if t == 0 {
		return time.Time{}
	}
	return time.Unix(int64(t), 0).UTC()
}

// RFC3339 is t in RFC 3339 (UTC, seconds), or "" when t is unknown.
func (t Timestamp) RFC3339() string {
	if t == 0 {
		return ""
	}
	return t.Time().Format(time.RFC3339)
}

// DecodeMachines parses the output of `machine ls --json`.
func DecodeMachines(out []byte) ([]Machine, error) {
	var ms []Machine
	if err := json.Unmarshal(bytes.TrimSpace(out), &ms); err != nil {
		return nil, err
	}
	return ms, nil
}

// DecodeMachine parses the output of `machine status --json`.
func DecodeMachine(out []byte) (Machine, error) {
	var m Machine
	err := json.Unmarshal(bytes.TrimSpace(out), &m)
	return m, err
}

// DecodeEgressDenials parses the output of `machine egress-events --json`.
func DecodeEgressDenials(out []byte) ([]EgressDenial, error) {
	var evs []EgressDenial
	if err := json.Unmarshal(bytes.TrimSpace(out), &evs); err != nil {
		return nil, err
	}
	return evs, nil
}

// List returns every machine (`machine ls --json`).
func (c *CLI) List(ctx context.Context) ([]Machine, error) {
	out, err := c.Output(ctx, "machine", "ls", "--json")
	if err != nil {
		return nil, fmt.Errorf("list machines: %w", err)
	}
	ms, err := DecodeMachines(out)
	if err != nil {
		return nil, fmt.Errorf("list machines: parse smolvm ls --json: %w", err)
	}
	return ms, nil
}

// Status returns one machine (`machine status --name N --json`).
func (c *CLI) Status(ctx context.Context, name string) (Machine, error) {
	out, err := c.Output(ctx, "machine", "status", "--name", name, "--json")
	if err != nil {
		return Machine{}, fmt.Errorf("status of machine %s: %w", name, err)
	}
	m, err := DecodeMachine(out)
	if err != nil {
		return Machine{}, fmt.Errorf("status of machine %s: parse smolvm status --json: %w", name, err)
	}
	return m, nil
}

// Delete removes a machine. It always passes -f: without it smolvm prompts,
// and on a closed stdin answers "Cancelled", exits 0 and deletes nothing.
// A machine that does not exist counts as deleted.
func (c *CLI) Delete(ctx context.Context, name string) error {
	_, err := c.Output(ctx, "machine", "delete", "--name", name, "-f")
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete machine %s: %w", name, err)
	}
	return nil
}

// ValidateName checks smolvm's machine-name rules (validate_vm_name): 1–128
// chars of [A-Za-z0-9_-], starting with a letter or digit, no trailing '-',
// no "--".
func ValidateName(name string) error {
	if name == "" || len(name) > 128 {
		return fmt.Errorf("machine name %q must be 1-128 characters", name)
	}
	for i, r := range name {
		ok := r == '-' || r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')
		if !ok {
			return fmt.Errorf("machine name %q may only contain letters, digits, '-' and '_'", name)
		}
		if i == 0 && (r == '-' || r == '_') {
			return fmt.Errorf("machine name %q must start with a letter or digit", name)
		}
	}
	if strings.HasSuffix(name, "-") {
		return fmt.Errorf("machine name %q must not end with '-'", name)
	}
	if strings.Contains(name, "--") {
		return fmt.Errorf("machine name %q must not contain \"--\"", name)
	}
	return nil
}

// IsLocalImage reports whether smolvm reads an --image value from the host
// (an archive, a rootfs dir or stdin) rather than pulling it from a registry
// (classify and looks_local in src/data/image_source.rs).
func IsLocalImage(ref string) bool {
	if ref == "-" {
		return true
	}
	for _, p := range []string{"/", "./", "../"} {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	for _, s := range []string{".tar", ".tar.gz", ".tgz"} {
		if strings.HasSuffix(ref, s) {
			return true
		}
	}
	return false
}

// EgressDenial is one entry of `machine egress-events --json`: an outbound
// connect or sendto the machine's egress policy refused, or a name its DNS
// filter would not resolve (operation "resolve", dest a host name).
type EgressDenial struct {
	// Timestamp is RFC 3339 (microseconds) as the VMM logged it, or "".
	Timestamp string `json:"timestamp"`
	Operation string `json:"operation"`
	Dest      string `json:"dest"`
}

// EgressEvents returns up to limit of the machine's most recent egress
// denials, oldest first. smolvm reads them from the machine's data dir by
// name: an unknown machine, or one that never booted, has none (no error).
func (c *CLI) EgressEvents(ctx context.Context, name string, limit int) ([]EgressDenial, error) {
	out, err := c.Output(ctx, "machine", "egress-events", "--name", name, "--json", "--limit", strconv.Itoa(limit))
	if err != nil {
		return nil, fmt.Errorf("egress events of machine %s: %w", name, err)
	}
	evs, err := DecodeEgressDenials(out)
	if err != nil {
		return nil, fmt.Errorf("egress events of machine %s: parse smolvm egress-events --json: %w", name, err)
	}
	return evs, nil
}

// CopyIn copies the host file hostPath to guestPath in the running machine
// (`machine cp HOST NAME:GUEST`).
func (c *CLI) CopyIn(ctx context.Context, hostPath, name, guestPath string) error {
	if err := checkCopyHostPath(hostPath); err != nil {
		return err
	}
	_, err := c.Output(ctx, "machine", "cp", hostPath, name+":"+guestPath)
	return err
}

// CopyOut copies guestPath in the running machine to the host file hostPath
// (`machine cp NAME:GUEST HOST`).
func (c *CLI) CopyOut(ctx context.Context, name, guestPath, hostPath string) error {
	if err := checkCopyHostPath(hostPath); err != nil {
		return err
	}
	_, err := c.Output(ctx, "machine", "cp", name+":"+guestPath, hostPath)
	return err
}

// checkCopyHostPath refuses a host path smolvm would misread: cp splits SRC
// at its first ':' whenever it has one, so a host source with a colon reads
// as a download from a machine named by its prefix.
func checkCopyHostPath(p string) error {
	if strings.Contains(p, ":") {
		return fmt.Errorf("host path %q holds a ':', which smolvm machine cp reads as MACHINE:PATH; use a path without one (for temp files, a TMPDIR without ':')", p)
	}
	return nil
}
