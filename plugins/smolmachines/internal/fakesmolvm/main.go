// Command fakesmolvm is a stand-in for the smolvm CLI, for tests on machines
// where smolvm cannot run. It follows the contract table in
// plugins/smolmachines/internal/smolvm (contract.go, read from smolvm's
// source) exactly where the plugin depends on it: flags as clap declares
// them, the JSON shapes and types of ls/status/egress-events, the texts on
// stdout, the error messages and exit codes; its table test pins that
// against fixtures in testdata/contract. Beyond the table it stays strict
// (name rules, the delete prompt, pack's refusals). "Guest" commands run on
// the host with the machine's -v mounts mapped onto host paths and the rest
// of the guest filesystem under a per-machine directory.
//
// State lives in $SMOLVM_FAKE_STATE; every call is recorded, argv and the
// names (never the values) of the environment, in calls.jsonl there.
// $SMOLVM_FAKE_RESOLVABLE is a comma list of host names that --allow-host
// can resolve (no DNS is ever asked). Egress denials are what a test
// appends to egress-denials.log in a machine's data dir (see egress.go).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/term"
)

const version = "1.9.2"

// runtimeError is one of smolvm's own errors: "Error: …", exit code 1.
type runtimeError struct{ msg string }

func (e *runtimeError) Error() string { return e.msg }

func runtimef(format string, a ...any) error { return &runtimeError{msg: fmt.Sprintf(format, a...)} }

// configErr is smolvm's Error::Config (src/data/errors.rs:154).
func configErr(op, format string, a ...any) error {
	return runtimef("config operation failed: %s: %s", op, fmt.Sprintf(format, a...))
}

// agentErr is smolvm's Error::Agent (src/data/errors.rs:194).
func agentErr(op, format string, a ...any) error {
	return runtimef("agent operation failed: %s: %s", op, fmt.Sprintf(format, a...))
}

// vmNotFound is smolvm's Error::VmNotFound (src/data/errors.rs:72).
func vmNotFound(name string) error { return runtimef("vm not found: %s", name) }

// exitCode lets a command end with a specific code without a message
// (the guest's exit code of exec).
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit %d", int(e)) }

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	st, err := openStore()
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
	record(st, args)
	err = dispatch(st, args)
	var ue *usageError
	var ec exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return int(ec)
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "error: %s\n\nFor more information, try '--help'.\n", ue.msg)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		return 1
	}
}

// call is one line of calls.jsonl.
type call struct {
	Time     string   `json:"time"`
	Argv     []string `json:"argv"`
	EnvNames []string `json:"env_names"`
	StdinTTY bool     `json:"stdin_tty"`
	PID      int      `json:"pid"`
}

func record(st *store, args []string) {
	var names []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	sort.Strings(names)
	c := call{Time: time.Now().UTC().Format(time.RFC3339Nano), Argv: append([]string{}, args...),
		EnvNames: names, StdinTTY: term.IsTerminal(int(os.Stdin.Fd())), PID: os.Getpid()}
	b, _ := json.Marshal(c)
	f, err := os.OpenFile(st.dir+"/calls.jsonl", os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}

func dispatch(st *store, args []string) error {
	if len(args) == 0 {
		return usagef("'smolvm' requires a subcommand but one was not provided")
	}
	switch args[0] {
	case "--version", "-V":
		fmt.Printf("smolvm %s\n", version)
		return nil
	case "--help", "-h", "help":
		fmt.Println("smolvm (fake for tests)\n\nUsage: smolvm <COMMAND>\n\nCommands: machine, pack, serve, config")
		return nil
	case "machine", "vm":
		if len(args) < 2 {
			return usagef("'smolvm machine' requires a subcommand but one was not provided")
		}
		rest := args[2:]
		switch args[1] {
		case "create":
			return cmdCreate(st, rest)
		case "start":
			return cmdStart(st, rest)
		case "stop":
			return cmdStop(st, rest)
		case "delete", "rm":
			return cmdDelete(st, rest)
		case "status":
			return cmdStatus(st, rest)
		case "ls", "list":
			return cmdList(st, rest)
		case "exec":
			return cmdExec(st, rest)
		case "cp":
			return cmdCp(st, rest)
		case "egress-events":
			return cmdEgressEvents(st, rest)
		case "data-dir":
			return cmdDataDir(st, rest)
		case "run", "fork", "fork-release", "update", "images", "prune", "shell", "sh", "monitor":
			return runtimef("the fake smolvm does not implement 'machine %s'", args[1])
		}
		return usagef("unrecognized subcommand '%s'", args[1])
	case "pack":
		if len(args) < 2 {
			return usagef("'smolvm pack' requires a subcommand but one was not provided")
		}
		switch args[1] {
		case "create":
			return cmdPackCreate(st, args[2:])
		case "push", "pull", "run", "inspect", "prune":
			return runtimef("the fake smolvm does not implement 'pack %s'", args[1])
		}
		return usagef("unrecognized subcommand '%s'", args[1])
	case "serve", "config":
		return runtimef("the fake smolvm does not implement '%s'", args[0])
	}
	return usagef("unrecognized subcommand '%s'", args[0])
}
