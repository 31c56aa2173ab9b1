package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Finding a bottle's init. The bottle's directory is the agent's to tamper
// with: it runs as you, and even with the directory read-only in the
// bottle it can rename a parent directory and put a forged one in its
// place. So Stop, List and Attach never take a pid from a file. They ask
// the kernel: a bottle's init is a process whose command line is exactly
// [initName, <the bottle's directory>] and which is pid 1 of a pid
// namespace that is a direct child of this process's. The agent cannot
// change the init's command line (it cannot ptrace a process with more
// capabilities), and every process it starts lives in the bottle's pid
// namespace or deeper: never pid 1 one level below this process.

// initProc is the bottle's init as the host sees it. The start time tells
// it apart from an unrelated process that got the same pid later, which
// Stop must never kill.
type initProc struct {
	pid   int
	start string
}

// findInits returns the live bottle inits below this process, by their
// bottle directory. It reads /proc once: a few hundred small files.
func findInits() map[string][]initProc {
	depth := nsDepth("self")
	out := map[string][]initProc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte(initName+"\x00")) {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if len(args) != 2 || depth == 0 || nsDepth(e.Name()) != depth+1 || !nsInit(e.Name()) {
			continue
		}
		state, start, ok := procStat(e.Name())
		if !ok || state == "Z" || state == "X" {
			continue
		}
		dir := filepath.Clean(args[1])
		out[dir] = append(out[dir], initProc{pid: pid, start: start})
	}
	return out
}

// findInit finds the bottle's init, if it is alive.
func (bt bottle) findInit() (initProc, bool) {
	ps := findInits()[bt.dir]
	if len(ps) == 0 {
		return initProc{}, false
	}
	return ps[0], true
}

// nsPids is the NSpid line of /proc/<pid>/status: the process's pid in its
// own pid namespace and in each one above it, outermost first.
func nsPids(pid string) []string {
	data, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "NSpid:"); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// nsDepth is how many pid namespaces deep a process is, as seen from here
// (0: unknown).
func nsDepth(pid string) int { return len(nsPids(pid)) }

// nsInit reports whether a process is pid 1 of its own pid namespace.
func nsInit(pid string) bool {
	ids := nsPids(pid)
	return len(ids) > 1 && ids[len(ids)-1] == "1"
}

// alive reports whether the init is still there, and not emptying its pid
// namespace any more.
func (p initProc) alive() bool {
	state, start, ok := procStat(strconv.Itoa(p.pid))
	if !ok || start != p.start {
		return false
	}
	if state != "Z" && state != "X" {
		return true
	}
	// A killed init's main thread can be a zombie while its last thread
	// is still emptying the pid namespace: it is gone when that is done.
	tasks, _ := os.ReadDir("/proc/" + strconv.Itoa(p.pid) + "/task")
	return len(tasks) > 1
}

// procStat reads a process's state and start time (fields 3 and 22 of
// /proc/<pid>/stat); pid may be "self".
func procStat(pid string) (state, start string, ok bool) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return "", "", false
	}
	// The command name, in parentheses, may itself contain spaces.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 20 {
		return "", "", false
	}
	return f[0], f[19], true
}
