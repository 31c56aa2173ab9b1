// Package review is the git side of a --review bottle: it clones the
// operator's repository for the bottle, takes what the agent did in that
// clone (committed and not) without ever running git on the agent's config,
// hooks or attributes, and brings it into the operator's repository as a
// branch that diff, apply and merge work from.
//
// Two kinds of git run here, and never a third:
//
//   - the core's git, on a bare repository the core owns (core.git, beside
//     the clone in the bottle's state, never mounted): no system or global
//     config, hooks and fsmonitor off. It reads the clone's objects through
//     an alternates entry (objects are data) and its worktree through
//     os.Root (files are data); the clone's .git/config, hooks and
//     info/attributes are never read by any git;
//   - the operator's git, in the operator's own repository: their config
//     (their identity, their filter drivers), but hooks, fsmonitor and
//     submodule recursion off and every fetched object fsck'd. The tree it
//     checks out may carry the agent's .gitattributes; a filter named there
//     runs only if the operator's own config defines its driver.
package review

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
)

// gitBinary is the git the core runs; tests may not change it.
const gitBinary = "git"

// locationVars are the environment variables that would point a git
// command at another repository, index, object store or config than the
// one it is run for. They are dropped from every command.
var locationVars = []string{
	"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
	"GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE",
	"GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_EXTERNAL_DIFF", "GIT_EXEC_PATH",
	"GIT_TEMPLATE_DIR", "GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_PAGER",
	"GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_REPLACE_REF_BASE", "GIT_NO_REPLACE_OBJECTS",
	"GIT_QUARANTINE_PATH", "GIT_PROTOCOL_FROM_USER", "GIT_ALLOW_PROTOCOL",
}

// configVars are the operator's configuration by environment: theirs for
// their git, never the core's.
var configVars = []string{
	"GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CONFIG_GLOBAL",
	"GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM",
}

// safety are the -c settings on every git the core runs, the operator's
// included: no hook, no fsmonitor, no submodule recursion, no replace
// refs, and objects fetched are checked.
var safety = []string{
	"-c", "core.hooksPath=/dev/null",
	"-c", "core.fsmonitor=false",
	"-c", "core.untrackedCache=false",
	"-c", "submodule.recurse=false",
	"-c", "transfer.fsckObjects=true",
	"-c", "protocol.allow=never",
	"-c", "protocol.file.allow=always",
	"-c", "core.pager=cat",
	"-c", "advice.detachedHead=false",
	// No background gc or maintenance started from a review command.
	"-c", "gc.auto=0",
	"-c", "maintenance.auto=false",
}

// gitCmd is one git command: where, as whom, with what.
type gitCmd struct {
	dir   string   // working directory ("" for none)
	env   []string // extra environment
	core  bool     // the core's git: no system or global config
	stdin io.Reader
	args  []string
	// safeDirs are the repositories this command may open although another
	// uid owns them (the core runs as root over an operator's repository).
	safeDirs []string
}

// gitError is a failed git command with what it said.
type gitError struct {
	args   []string
	code   int
	stderr string
}

// lockHeld finds git's "Unable to create '<path>.lock': File exists": a
// lock file another git holds, or one a killed git left behind.
var lockHeld = regexp.MustCompile(`Unable to create '([^'\n]+\.lock)': File exists`)

func (e *gitError) Error() string {
	if m := lockHeld.FindStringSubmatch(e.stderr); m != nil {
		// git's own hint spans six lines; this is the same in one.
		return fmt.Sprintf("git %s: %s exists: another git is running in that repository, or one was killed there; if none runs, remove it and run this again", e.args[0], m[1])
	}
	msg := strings.TrimSpace(e.stderr)
	if i := strings.LastIndex(msg, "\n"); i >= 0 {
		// git's last line is its reason; earlier ones are hints.
		first := strings.SplitN(msg, "\n", 2)[0]
		if strings.HasPrefix(first, "fatal:") || strings.HasPrefix(first, "error:") {
			msg = first
		} else {
			msg = msg[i+1:]
		}
	}
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.code)
	}
	return fmt.Sprintf("git %s: %s", e.args[0], strings.TrimPrefix(strings.TrimPrefix(msg, "fatal: "), "error: "))
}

func environ(core bool, extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		drop := k == "LC_ALL" || k == "LANG" || k == "LANGUAGE"
		for _, v := range locationVars {
			drop = drop || k == v
		}
		for _, v := range configVars {
			drop = drop || (core && (k == v || strings.HasPrefix(k, "GIT_CONFIG_KEY_") || strings.HasPrefix(k, "GIT_CONFIG_VALUE_")))
		}
		if !drop {
			env = append(env, kv)
		}
	}
	// C messages: apply's and merge-tree's lines are parsed.
	env = append(env, "LC_ALL=C", "GIT_TERMINAL_PROMPT=0", "GIT_OPTIONAL_LOCKS=0")
	if core {
		env = append(env, "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
	}
	return append(env, extra...)
}

// run runs the command and returns its stdout; a non-zero exit is a
// *gitError carrying stderr.
func (g gitCmd) run(ctx context.Context) ([]byte, error) {
	out, _, err := g.output(ctx)
	return out, err
}

// output is run with stderr too, and the exit code in a *gitError.
func (g gitCmd) output(ctx context.Context) ([]byte, []byte, error) {
	args := append([]string{}, safety...)
	for _, d := range g.safeDirs {
		args = append(args, "-c", "safe.directory="+d)
	}
	args = append(args, g.args...)
	cmd := exec.CommandContext(ctx, gitBinary, args...)
	cmd.Dir = g.dir
	cmd.Env = environ(g.core, g.env)
	cmd.Stdin = g.stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		return stdout.Bytes(), stderr.Bytes(), &gitError{args: g.args, code: xe.ExitCode(), stderr: stderr.String()}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("git %s: %w", g.args[0], err)
	}
	return stdout.Bytes(), stderr.Bytes(), nil
}

// exitCode is the exit status of a failed git command, or -1.
func exitCode(err error) int {
	var ge *gitError
	if errors.As(err, &ge) {
		return ge.code
	}
	return -1
}

func trim(b []byte) string { return strings.TrimSpace(string(b)) }
