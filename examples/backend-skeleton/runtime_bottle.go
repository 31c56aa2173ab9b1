package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// A bottle is a directory under the backend's root, named by its identity.
// Everything a plugin process needs to drive a bottle is in there, so that a
// fresh process (another terminal, after a crash) can attach to, list or
// stop a bottle that another one launched. The plugin itself keeps nothing.
//
//	<root>/<identity>/
//	  bottle.json  the record: what runs, where, how (never a Spec.Env value)
//	  stdin        a FIFO: Attach writes the user's input into it
//	  tty          the terminal's device path, with a TTY
//	  stdout.log   the agent's output (all of it, with a TTY)
//	  stderr.log   the agent's stderr, without a TTY
//	  started      exists once the agent runs
//	  exit         the agent's exit code, once it has exited
//	  work/        the agent's working directory, unless it works in Spec.Cwd
//	  bin/bottle   a link to the in-bottle helper, first on the agent's PATH
const (
	fileRecord  = "bottle.json"
	fileStdin   = "stdin"
	fileTTY     = "tty"
	fileStdout  = "stdout.log"
	fileStderr  = "stderr.log"
	fileStarted = "started"
	fileExit    = "exit"
	dirWork     = "work"
	dirBin      = "bin"
)

// record is what Launch knows and every later call needs. It holds no
// secret: Spec.Env values only ever exist in the bottle's processes.
type record struct {
	Identity string   `json:"identity"`
	Home     string   `json:"home,omitempty"`
	Agent    string   `json:"agent"`
	Command  []string `json:"command"`
	Cwd      string   `json:"cwd"`
	TTY      bool     `json:"tty"`
	Detach   bool     `json:"detach"`
	Created  string   `json:"created"`
	// Keep are the host paths the agent needs (project, queue, helper,
	// its binary), kept reachable where the init hides host directories.
	Keep []string `json:"keep,omitempty"`
}

type bottle struct{ dir string }

func (bt bottle) path(name string) string { return filepath.Join(bt.dir, name) }

func (bt bottle) exists(name string) bool {
	_, err := os.Lstat(bt.path(name))
	return err == nil
}

func (bt bottle) record() (record, error) {
	var rec record
	data, err := os.ReadFile(bt.path(fileRecord))
	if errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("bottle %s: %w", filepath.Base(bt.dir), sdk.ErrNotFound)
	}
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return rec, fmt.Errorf("bottle %s: %s: %w", filepath.Base(bt.dir), fileRecord, err)
	}
	return rec, nil
}

func (bt bottle) writeRecord(rec record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(bt.path(fileRecord), data, 0o600)
}

// exitCode is the agent's exit code, once the init has recorded it.
func (bt bottle) exitCode() (int, bool) {
	data, err := os.ReadFile(bt.path(fileExit))
	if err != nil {
		return 0, false
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(data)))
	return code, err == nil
}

// status is what List reports: created (waiting for its first attach),
// running, or exited (which includes an init that died without saying how,
// after a reboot for instance). Whether the init is alive comes from the
// kernel (see findInits), not from the bottle's files.
func (bt bottle) status(initAlive bool) string {
	switch {
	case !initAlive:
		return sdk.StatusExited
	case bt.exists(fileStarted):
		return sdk.StatusRunning
	}
	return sdk.StatusCreated
}

// writeAtomicAt is writeAtomic in the directory dir.
func writeAtomicAt(dir *os.File, name string, data []byte) error {
	fd, err := unix.Openat(int(dir.Fd()), name+".tmp", unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), name)
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return unix.Renameat(int(dir.Fd()), name+".tmp", int(dir.Fd()), name)
}

// writeAtomic writes a file that readers poll for, so that they never see
// it half written.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
