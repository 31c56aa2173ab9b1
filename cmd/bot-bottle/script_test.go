package main_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/bot-bottle/bot-bottle/sdk/render"
)

// binDir holds the real binaries the scripts drive: bot-bottle and the test
// backend plugin, each built with `go build` like a user would.
var binDir string

// fakeSmolvmDir holds the strict fake `smolvm` (smolvm cannot run here).
var fakeSmolvmDir string

func TestMain(m *testing.M) {
	code, err := buildAndRun(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(code)
}

func buildAndRun(m *testing.M) (int, error) {
	dir, err := os.MkdirTemp("", "bbbin")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	binDir = dir
	fakeDir := filepath.Join(dir, "fake")
	builds := [][]string{
		{"-o", filepath.Join(dir, "bot-bottle"), "."},
		{"-o", filepath.Join(dir, "bot-bottle-plugin-test"), "../../internal/testplugin"},
		{"-o", filepath.Join(dir, "bot-bottle-plugin-smolmachines"), "../../plugins/smolmachines"},
		{"-o", filepath.Join(fakeDir, "smolvm"), "../../plugins/smolmachines/internal/fakesmolvm"},
	}
	errs := make(chan error, len(builds)+3)
	for _, b := range builds {
		go func() {
			cmd := exec.Command("go", append([]string{"build"}, b...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("go build %v: %v\n%s", b, err, out)
				return
			}
			errs <- nil
		}()
	}
	// The in-bottle helper is static, as `make build` makes it.
	go func() {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bottle"), "../bottle")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			errs <- fmt.Errorf("go build bottle: %v\n%s", err, out)
			return
		}
		errs <- nil
	}()
	// So is the docker plugin, for Linux whatever the host: it is also its
	// bottles' egress proxy, which runs in a container.
	go func() {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bot-bottle-plugin-docker"), "../../plugins/docker")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			errs <- fmt.Errorf("go build bot-bottle-plugin-docker: %v\n%s", err, out)
			return
		}
		errs <- nil
	}()
	// The example backend is a module of its own: build it from its
	// directory, as a third party would.
	go func() {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "bot-bottle-plugin-skeleton"), ".")
		cmd.Dir = "../../examples/backend-skeleton"
		if out, err := cmd.CombinedOutput(); err != nil {
			errs <- fmt.Errorf("go build examples/backend-skeleton: %v\n%s", err, out)
			return
		}
		errs <- nil
	}()
	for range len(builds) + 3 {
		if err := <-errs; err != nil {
			return 0, err
		}
	}
	fakeSmolvmDir = fakeDir
	return m.Run(), nil
}

// scriptParams is the common setup of every CLI script: a fresh
// BOT_BOTTLE_HOME, the test backend's root, and only our binaries on PATH
// ahead of the system's.
func scriptParams(dir string) testscript.Params {
	return testscript.Params{
		Dir: dir,
		Setup: func(env *testscript.Env) error {
			env.Setenv("PATH", binDir+string(os.PathListSeparator)+env.Getenv("PATH"))
			env.Setenv("BOT_BOTTLE_HOME", filepath.Join(env.WorkDir, "home"))
			env.Setenv("BB_TESTPLUGIN_ROOT", filepath.Join(env.WorkDir, "tproot"))
			env.Setenv("BIN", binDir)
			env.Setenv("FAKE_SMOLVM_DIR", fakeSmolvmDir)
			env.Setenv("SMOLVM_FAKE_STATE", filepath.Join(env.WorkDir, "smolvm-state"))
			env.Setenv("HOME", env.WorkDir)
			env.Defer(func() { killPlugins(filepath.Join(env.WorkDir, "tproot")) })
			return nil
		},
		Condition: scriptCondition,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"setid":       cmdSetID,
			"termsafe":    cmdTermSafe,
			"egressproxy": cmdEgressProxy,
			"rawhttp":     cmdRawHTTP,
			"httpserver":  cmdHTTPServer,
			"recordlines": cmdRecordLines,
			"exitcode":    cmdExitCode,
			"waitfile":    cmdWaitFile,
			"killpidf":    cmdKillPidFile,
			"procgone":    cmdProcGone,
			"noplugins":   cmdNoPlugins,
			"treesnap":    cmdTreeSnap,
			"emptydir":    cmdEmptyDir,
			"sha256file":  cmdSHA256File,
			"jsonshape":   cmdJSONShape,
			"setreq":      cmdSetReq,
		},
	}
}

func TestScripts(t *testing.T) {
	p := scriptParams("testdata/script")
	// BB_UPDATE_SCRIPTS=1 rewrites a script's cmp files from what it got
	// (e.g. json_shapes.txtar after a deliberate change of shape).
	p.UpdateScripts = os.Getenv("BB_UPDATE_SCRIPTS") == "1"
	testscript.Run(t, p)
}

var idPattern = regexp.MustCompile(`bot-bottle: (?:starting|resuming) ([a-z0-9-]+-[a-z0-9]{5})`)

// setid VAR: the identity of the bottle the last command started, from its
// stderr, into $VAR.
func cmdSetID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: setid VAR")
	}
	m := idPattern.FindStringSubmatch(ts.ReadFile("stderr"))
	if m == nil {
		ts.Fatalf("no identity in stderr")
	}
	ts.Setenv(args[0], m[1])
}

// exitcode N cmd args...: run cmd, require exit status N; stdout and stderr
// are kept for the usual assertions.
func cmdExitCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode N cmd [args...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		got = ee.ExitCode()
	} else if err != nil {
		ts.Fatalf("exitcode: %v", err)
	}
	if got != want {
		ts.Fatalf("exit status %d, want %d", got, want)
	}
}

// waitfile PATH [TIMEOUT]: wait until PATH exists.
func cmdWaitFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: waitfile PATH [timeout]")
	}
	timeout := 20 * time.Second
	if len(args) > 1 {
		timeout, _ = time.ParseDuration(args[1])
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(ts.MkAbs(args[0])); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	ts.Fatalf("%s did not appear within %s", args[0], timeout)
}

func readPid(ts *testscript.TestScript, file string) int {
	pid, err := strconv.Atoi(strings.TrimSpace(ts.ReadFile(file)))
	if err != nil {
		ts.Fatalf("pid file %s: %v", file, err)
	}
	return pid
}

// killpidf FILE: SIGKILL the process whose pid FILE holds.
func cmdKillPidFile(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: killpidf FILE")
	}
	pid := readPid(ts, args[0])
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		ts.Fatalf("kill %d: %v", pid, err)
	}
}

// procgone FILE TIMEOUT: the process whose pid FILE holds is gone (not even
// a zombie of ours) within TIMEOUT.
func cmdProcGone(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: procgone FILE TIMEOUT")
	}
	pid := readPid(ts, args[0])
	timeout, err := time.ParseDuration(args[1])
	if err != nil {
		ts.Fatalf("procgone: %v", err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !processAlive(pid) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	ts.Fatalf("process %d still running after %s", pid, timeout)
}

func processAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// pluginPids lists live test-plugin processes serving this script's root.
func pluginPids(root string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || filepath.Base(exe) != "bot-bottle-plugin-test" {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !bytes.Contains(env, []byte("BB_TESTPLUGIN_ROOT="+root+"\x00")) {
			continue
		}
		if processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func killPlugins(root string) {
	for _, pid := range pluginPids(root) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// noplugins [TIMEOUT]: no test-plugin process of this script is left.
func cmdNoPlugins(ts *testscript.TestScript, neg bool, args []string) {
	timeout := 5 * time.Second
	if len(args) > 0 {
		timeout, _ = time.ParseDuration(args[0])
	}
	root := ts.Getenv("BB_TESTPLUGIN_ROOT")
	deadline := time.Now().Add(timeout)
	for {
		pids := pluginPids(root)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("plugin processes left behind: %v", pids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// treesnap DIR FILE: write a listing of DIR (paths, sizes, modes, contents
// hash) to FILE, so a later cmp shows nothing changed.
func cmdTreeSnap(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: treesnap DIR FILE")
	}
	root := ts.MkAbs(args[0])
	var lines []string
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		line := fmt.Sprintf("%s %s %d", rel, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" %x", data)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		ts.Fatalf("treesnap: %v", err)
	}
	sort.Strings(lines)
	if err := os.WriteFile(ts.MkAbs(args[1]), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		ts.Fatalf("treesnap: %v", err)
	}
}

// emptydir DIR: DIR is missing or has no entries.
func cmdEmptyDir(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 1 {
		ts.Fatalf("usage: emptydir DIR")
	}
	entries, err := os.ReadDir(ts.MkAbs(args[0]))
	empty := errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0)
	if empty == neg {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		ts.Fatalf("%s: entries %v (negated: %v)", args[0], names, neg)
	}
}

// sha256file FILE VAR: the sha256 of FILE into $VAR.
func cmdSHA256File(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: sha256file FILE VAR")
	}
	out, err := exec.Command("sha256sum", ts.MkAbs(args[0])).Output()
	if err != nil {
		ts.Fatalf("sha256sum: %v", err)
	}
	ts.Setenv(args[1], strings.Fields(string(out))[0])
}

// setreq VAR [TIMEOUT]: wait for a pending request from any bottle (via
// `bot-bottle requests --json`) and put its id in $VAR.
func cmdSetReq(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 {
		ts.Fatalf("usage: setreq VAR [timeout]")
	}
	timeout := 20 * time.Second
	if len(args) > 1 {
		timeout, _ = time.ParseDuration(args[1])
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		cmd := exec.Command(filepath.Join(binDir, "bot-bottle"), "requests", "--json")
		cmd.Env = append(os.Environ(), "BOT_BOTTLE_HOME="+ts.Getenv("BOT_BOTTLE_HOME"), "BB_TESTPLUGIN_ROOT="+ts.Getenv("BB_TESTPLUGIN_ROOT"))
		out, _ := cmd.Output()
		var reqs []struct{ ID, Status string }
		_ = json.Unmarshal(out, &reqs)
		for _, r := range reqs {
			if r.Status == "pending" { // the oldest pending one
				ts.Setenv(args[0], r.ID)
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	ts.Fatalf("no pending request within %s", timeout)
}

// scriptCondition adds [capture] (a DNS capture can run here, for the
// egress scripts) and [userns] (this host lets a user make the namespaces
// the skeleton example backend needs). Under CI=true both are always true,
// so that CI fails rather than skips.
func scriptCondition(cond string) (bool, error) {
	var probe func() bool
	switch cond {
	case "capture":
		probe = canCapture
	case "userns":
		probe = func() bool {
			return exec.Command("unshare", "--user", "--map-root-user", "--mount", "--pid", "--fork", "--mount-proc", "true").Run() == nil
		}
	default:
		return false, fmt.Errorf("unknown condition %q", cond)
	}
	if os.Getenv("CI") == "true" {
		return true, nil
	}
	return probe(), nil
}

// termsafe: the last command's stdout and stderr hold no byte a terminal
// would act on instead of print — valid UTF-8, and no control, C1, bidi or
// invisible character other than the newline (render.Unsafe).
func cmdTermSafe(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: termsafe")
	}
	for _, name := range []string{"stdout", "stderr"} {
		out := ts.ReadFile(name)
		if !utf8.ValidString(out) {
			ts.Fatalf("%s is not valid UTF-8: %q", name, out)
		}
		for i, r := range out {
			if r != '\n' && render.Unsafe(r) {
				ts.Fatalf("%s has %U at byte %d: %q", name, r, i, out[max(0, i-40):min(len(out), i+40)])
			}
		}
	}
}

// recordStart is how a line of `bot-bottle audit` that is a record begins.
var recordStart = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`)

// recordlines JSONL: the last stdout has exactly as many lines that start
// like an audit record as JSONL has lines: no value forged one.
func cmdRecordLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: recordlines JSONL")
	}
	want := strings.Count(ts.ReadFile(args[0]), "\n")
	if got := len(recordStart.FindAllString(ts.ReadFile("stdout"), -1)); got != want {
		ts.Fatalf("stdout has %d lines that start like a record; the log has %d records", got, want)
	}
}
