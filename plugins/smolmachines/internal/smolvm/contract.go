package smolvm

import (
	"regexp"
	"strings"
)

// The contract: every smolvm command line the plugin runs, every flag it
// passes, what each prints and the exit codes and error texts it acts on, as
// read in smolvm's own source (SourceRepo at SourceCommit; each row says
// where). It is the one description of smolvm the driver, the fake smolvm
// (internal/fakesmolvm) and their tests share: the driver matches the
// Messages below, and the fake's table test runs every Case against the fake
// and compares what it prints with the fixtures in
// internal/fakesmolvm/testdata/contract, which are written from the source.
// When smolvm changes, re-read the source, update this table, then the
// fixtures, then the fake.
const (
	SourceRepo    = "github.com/smol-machines/smolvm"
	SourceCommit  = "a5df500118e2c088a45d2d99aa71b4f4bb6dc285"
	SourceVersion = "1.9.2" // Cargo.toml at SourceCommit
)

// Call is one kind of smolvm invocation the plugin makes.
type Call struct {
	// ID names the call.
	ID string
	// Use is the command line as the plugin builds it; upper-case words
	// stand for values.
	Use string
	// Source is where smolvm declares the command and runs it.
	Source string
	// Flags are the flags the plugin passes, each where clap declares it.
	Flags []Flag
	// Output is what stdout holds on success, with its JSON types.
	Output string
	// Cases are concrete runs in the contract's world (see Case);
	// they run in table order, the first is the call's success case.
	Cases []Case
}

// Flag is one flag the plugin passes.
type Flag struct {
	Flag   string
	Source string
	Note   string
}

// Case is one concrete invocation and what smolvm does with it.
//
// The Cases run in one world the test sets up, named in placeholders
// ({ANY} in an expected text is any text, a line "..." any lines):
//
//	{PROJ}    an existing host directory, mounted at /workspace in fx
//	{ROOTFS}  the canonical path of a host directory used as a rootfs image
//	{TMP}     a scratch host directory
//	{PID}     in an expected text: any process id
//	{DATADIR} in an expected text: smolvm's data dir of the machine
//
// Machines: fx (registry image, allow-listed network, secret TOKEN from
// host variable BB_FX_TOKEN="fx-secret"), fx-idle (the {ROOTFS} image, never
// started), ghost (never created).
type Case struct {
	// Setup runs before Argv and Teardown after it; both must succeed.
	Setup, Teardown [][]string
	Argv            []string
	Stdin           string
	Code            int
	// Fixture is the file under testdata/contract holding the expected
	// stdout (.json compared as JSON, values in Varies by type only; .txt
	// compared as text). Empty when stdout is not pinned.
	Fixture string
	// Stderr is the message ErrorMessage must extract from stderr, or ""
	// when stderr is not pinned.
	Stderr string
	// NotFound says IsNotFound must hold for this failure (and must not
	// for any other failure).
	NotFound bool
	// Source is where smolvm produces this outcome.
	Source string
}

// Varies are JSON keys whose values depend on the run (a process id, the
// clock): fixtures pin their type, not their value.
var Varies = []string{"pid", "created_at"}

// Message is an error text of smolvm's that the plugin acts on: the part of
// stderr after "Error: ", with exit code 1 (src/main.rs:214). NAME stands
// for a machine name.
type Message struct {
	ID      string
	Pattern string
	Source  string
	re      *regexp.Regexp
}

func newMessage(id, pattern, source string) *Message {
	q := strings.ReplaceAll(regexp.QuoteMeta(pattern), "NAME", `[A-Za-z0-9_-]+`)
	return &Message{ID: id, Pattern: pattern, Source: source, re: regexp.MustCompile(`(^|: )` + q + `$`)}
}

// Match reports whether msg is this message, alone or after a context
// prefix ("…: ").
func (m *Message) Match(msg string) bool { return m.re.MatchString(msg) }

// The messages that mean "no such machine". smolvm has three wordings.
var (
	MsgVMNotFound = newMessage("vm-not-found", "vm not found: NAME",
		"src/data/errors.rs:72 (Error::VmNotFound; start, stop, delete, exec, cp, data-dir)")
	MsgStatusNotFound = newMessage("status-not-found", "config operation failed: machine status: machine 'NAME' not found",
		"src/cli/vm_common.rs:2532 (status_vm_json)")
	MsgPackNotFound = newMessage("pack-not-found", "agent operation failed: pack from VM: VM 'NAME' not found",
		"src/cli/pack.rs:533 (pack_from_vm)")
)

// NotFoundMessages are the messages IsNotFound accepts.
var NotFoundMessages = []*Message{MsgVMNotFound, MsgStatusNotFound, MsgPackNotFound}

// MachineFields is the object `machine ls --json` (an array of them) and
// `machine status --json` print, built by machine_status_json
// (src/cli/vm_common.rs:2469); the types are those of VmRecord
// (src/config.rs:364). "|null" marks an Option.
var MachineFields = []Field{
	{"name", "string", "src/cli/vm_common.rs:2485"},
	{"state", "string", "src/cli/vm_common.rs:2486 (RecordState, src/config.rs:39: created|running|stopped|failed|unreachable|frozen)"},
	{"cpus", "number", "src/cli/vm_common.rs:2487 (u8, src/config.rs:387)"},
	{"memory_mib", "number", "src/cli/vm_common.rs:2488 (u32, src/config.rs:391)"},
	{"pid", "number|null", "src/cli/vm_common.rs:2489 (Option<i32>, src/config.rs:378)"},
	{"mounts", "number", "src/cli/vm_common.rs:2490 (a count)"},
	{"ports", "number", "src/cli/vm_common.rs:2491 (a count)"},
	{"created_at", "number", "src/cli/vm_common.rs:2492 (u64 seconds, src/config.rs:370; a legacy record's digit string is read by deserialize_timestamp, src/config.rs:611)"},
	{"storage_gb", "number|null", "src/cli/vm_common.rs:2493 (Option<u64>, src/config.rs:466)"},
	{"overlay_gb", "number|null", "src/cli/vm_common.rs:2494 (Option<u64>, src/config.rs:470)"},
	{"image", "string|null", "src/cli/vm_common.rs:2495 (Option<String>, src/config.rs:490; a local image is local:<sha256> or local-dir:<path>, src/data/image_source.rs:303)"},
	{"entrypoint", "array", "src/cli/vm_common.rs:2496 (Vec<String>)"},
	{"cmd", "array", "src/cli/vm_common.rs:2497 (Vec<String>: the words after -- at create)"},
	{"ephemeral", "bool", "src/cli/vm_common.rs:2498"},
	{"gpu", "bool", "src/cli/vm_common.rs:2499"},
	{"gpu_vram_mib", "number|null", "src/cli/vm_common.rs:2500"},
	{"cuda", "bool", "src/cli/vm_common.rs:2501"},
	{"forkable", "bool", "src/cli/vm_common.rs:2502"},
	{"cuda_fork_pool_size", "number|null", "src/cli/vm_common.rs:2503"},
	{"cuda_vram_limit_mib", "number|null", "src/cli/vm_common.rs:2504"},
	{"forkpoint_held", "bool", "src/cli/vm_common.rs:2505"},
	{"labels", "object", "src/cli/vm_common.rs:2506 (BTreeMap<String,String>; {} when empty)"},
	{"restart_policy", "string", "src/cli/vm_common.rs:2507 (never|always|on-failure|unless-stopped)"},
	{"restart_max_retries", "number", "src/cli/vm_common.rs:2508"},
	{"restart_count", "number", "src/cli/vm_common.rs:2509"},
	{"health_cmd", "string|null", "src/cli/vm_common.rs:2510"},
	{"health_interval_secs", "number|null", "src/cli/vm_common.rs:2511"},
	{"health_timeout_secs", "number|null", "src/cli/vm_common.rs:2512"},
	{"health_retries", "number|null", "src/cli/vm_common.rs:2513"},
	{"health_startup_grace_secs", "number|null", "src/cli/vm_common.rs:2514"},
	{"network", "bool", "src/cli/vm_common.rs:2518"},
}

// EgressDenialFields is one element of `machine egress-events --json`
// (EgressDenial, src/agent/manager.rs:387).
var EgressDenialFields = []Field{
	{"timestamp", "string", "src/agent/manager.rs:390 (RFC 3339 as logged, or \"\")"},
	{"operation", "string", "src/agent/manager.rs:392 (connect|sendto|resolve)"},
	{"dest", "string", "src/agent/manager.rs:394 (ip:port, or a host name for resolve)"},
}

// Field is one key of a JSON object smolvm prints and its JSON type.
type Field struct {
	Name   string
	Type   string
	Source string
}

// Contract is the table.
var Contract = []Call{
	{
		ID: "version", Use: "smolvm --version",
		Source: "src/main.rs:18 (clap #[command(version)], Cargo.toml version)",
		Output: `"smolvm <version>\n"`,
		Cases:  []Case{{Argv: []string{"--version"}, Fixture: "version.txt", Source: "src/main.rs:18"}},
	},
	{
		ID:     "create",
		Use:    "smolvm machine create --name NAME --image IMAGE [--cpus N] [--mem MIB] [-v HOST:GUEST]... [-e K=V]... [--secret-env G=HOSTVAR]... [--allow-host HOST]... -w DIR [--label K=V]... -- sleep infinity",
		Source: "src/cli/machine.rs:2923 (CreateCmd), run at src/cli/machine.rs:3104, record built by src/cli/vm_common.rs:581",
		Flags: []Flag{
			{"--name", "src/cli/machine.rs:2925", "validated by validate_vm_name, src/data/mod.rs:58"},
			{"--image", "src/cli/machine.rs:2942", "registry ref, or local (/, ./, ../, *.tar, *.tar.gz, *.tgz, -): src/data/image_source.rs:75"},
			{"--cpus", "src/cli/machine.rs:2953", "u8, default 4 (src/data/resources.rs:4); 0 refused at src/data/resources.rs:85"},
			{"--mem", "src/cli/machine.rs:2957", "u32 MiB, default 8192 (src/data/resources.rs:8)"},
			{"-v", "src/cli/machine.rs:2975", "HOST:GUEST[:ro], host an existing directory"},
			{"-e", "src/cli/machine.rs:3045", "KEY=VALUE, persisted in the record"},
			{"--secret-env", "src/cli/machine.rs:3072", "GUEST=HOSTVAR: a reference; the value is read from smolvm's env at each start and exec, never stored"},
			{"--allow-host", "src/cli/machine.rs:3005", "resolved on the host at create (src/smolfile.rs:38); host:port refused; implies network"},
			{"-w", "src/cli/machine.rs:3049", ""},
			{"--label", "src/cli/machine.rs:2935", "KEY=VALUE split on the first '=', read back in ls --json labels"},
			{"--", "src/cli/machine.rs:3099", "last = true: the persistent workload, the record's cmd"},
		},
		Output: "text: \"Created machine: NAME\" and a summary (src/cli/vm_common.rs:720)",
		Cases: []Case{
			{Argv: []string{"machine", "create", "--name", "fx", "--image", "alpine", "--cpus", "2", "--mem", "1024",
				"-v", "{PROJ}:/workspace", "-e", "FOO=bar", "--secret-env", "TOKEN=BB_FX_TOKEN", "--allow-host", "127.0.0.1",
				"-w", "/workspace", "--label", "bot-bottle.managed=true", "--label", "bot-bottle.identity=fx-1", "--", "sleep", "infinity"},
				Fixture: "create.txt", Source: "src/cli/vm_common.rs:721"},
			{Argv: []string{"machine", "create", "--name", "fx-idle", "--image", "{ROOTFS}"},
				Source: "src/data/image_source.rs:177 (resolve_directory)"},
			{Argv: []string{"machine", "create", "--name", "fx", "--image", "{ROOTFS}"}, Code: 1,
				Stderr: "config operation failed: create machine: machine 'fx' already exists or is being created",
				Source: "src/cli/vm_common.rs:535"},
			{Argv: []string{"machine", "create", "--name", "fx-2", "--image", "alpine", "--allow-host", "example.com:443"}, Code: 1,
				Stderr: "config operation failed: --allow-host: invalid hostname 'example.com:443': port suffixes are not supported. Use the hostname only (all ports are allowed to resolved IPs).",
				Source: "src/smolfile.rs:52, wrapped at src/cli/machine.rs:91"},
			{Argv: []string{"machine", "create", "--name", "fx-2", "--image", "alpine"}, Code: 1,
				Stderr: "config operation failed: create machine: image 'alpine' must be pulled from a registry, but this machine has no network, so the pull can never succeed. Add --net (or publish a port with -p, or set an egress policy with --allow-cidr/--allow-host). To keep the machine network-isolated, supply the image locally instead: `docker save alpine | smolvm machine create --image - ...`",
				Source: "src/config.rs:875 (validate_image_fetchable)"},
			{Argv: []string{"machine", "create", "--name", "fx-", "--image", "{ROOTFS}"}, Code: 1,
				Stderr: `config operation failed: create machine: machine name cannot end with a hyphen (got: "fx-")`,
				Source: "src/data/mod.rs:79, wrapped at src/cli/vm_common.rs:587"},
		},
	},
	{
		ID: "start", Use: "smolvm machine start --name NAME",
		Source: "src/cli/machine.rs:3590 (StartCmd), run by start_vm_named, src/cli/vm_common.rs:1264",
		Flags:  []Flag{{"--name", "src/cli/machine.rs:3592", ""}},
		Output: "text: \"Machine 'NAME' running (PID: N)\" (src/cli/vm_common.rs:1655); progress on stderr (src/cli/vm_common.rs:1404)",
		Cases: []Case{
			{Argv: []string{"machine", "start", "--name", "fx"}, Fixture: "start.txt", Source: "src/cli/vm_common.rs:1655"},
			{Argv: []string{"machine", "start", "--name", "fx"}, Fixture: "start-running.txt", Source: "src/cli/vm_common.rs:1303 (exit 0 when already running)"},
			{Argv: []string{"machine", "start", "--name", "ghost"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/vm_common.rs:1286"},
			{Setup: [][]string{{"machine", "create", "--name", "fx-nosecret", "--image", "alpine", "--allow-host", "127.0.0.1",
				"--secret-env", "KEY=BB_FX_UNSET"}},
				Argv: []string{"machine", "start", "--name", "fx-nosecret"}, Code: 1,
				Stderr:   "config operation failed: resolve secret 'KEY': env_unset",
				Teardown: [][]string{{"machine", "delete", "--name", "fx-nosecret", "-f"}},
				Source:   "src/secrets.rs:452, at every start (src/cli/vm_common.rs:1497) and exec (src/cli/machine.rs:2714): the host variable is unset"},
		},
	},
	{
		ID: "status", Use: "smolvm machine status --name NAME --json",
		Source: "src/cli/machine.rs:4018 (StatusCmd), src/cli/vm_common.rs:2524 (status_vm_json)",
		Flags:  []Flag{{"--name", "src/cli/machine.rs:4020", ""}, {"--json", "src/cli/machine.rs:4024", ""}},
		Output: "one MachineFields object, pretty JSON (src/cli/vm_common.rs:2538)",
		Cases: []Case{
			{Argv: []string{"machine", "status", "--name", "fx", "--json"}, Fixture: "status.json", Source: "src/cli/vm_common.rs:2538"},
			{Argv: []string{"machine", "status", "--name", "ghost", "--json"}, Code: 1,
				Stderr: "config operation failed: machine status: machine 'ghost' not found", NotFound: true,
				Source: "src/cli/vm_common.rs:2532"},
		},
	},
	{
		ID: "ls", Use: "smolvm machine ls --json",
		Source: "src/cli/machine.rs:4106 (LsCmd), src/cli/vm_common.rs:2549 (list_vms)",
		Flags:  []Flag{{"--json", "src/cli/machine.rs:4112", ""}},
		Output: "a JSON array of MachineFields objects (src/cli/vm_common.rs:2569), \"[]\" when there are none (src/cli/vm_common.rs:2559); order not specified (a HashMap)",
		Cases: []Case{
			{Argv: []string{"machine", "ls", "--json"}, Fixture: "ls.json", Source: "src/cli/vm_common.rs:2569"},
		},
	},
	{
		ID: "exec", Use: "smolvm machine exec --name NAME [-w DIR] [-e K=V]... -- CMD...",
		Source: "src/cli/machine.rs:2626 (ExecCmd), run at src/cli/machine.rs:2678",
		Flags: []Flag{
			{"--name", "src/cli/machine.rs:2632", "long only: exec has no -n"},
			{"-w", "src/cli/machine.rs:2636", ""},
			{"-e", "src/cli/machine.rs:2640", "over the record's env and secrets"},
			{"--", "src/cli/machine.rs:2628", "trailing_var_arg, required"},
			{"--timeout", "src/cli/machine.rs:2654", "humantime duration > 0; the killed command exits 124. Not passed by the plugin today"},
			{"--secret-env", "src/cli/machine.rs:2645", "GUEST=HOSTVAR for this exec only. Not passed by the plugin today: its secrets are the machine's, from create"},
		},
		Output: "the guest's stdout and stderr, buffered and printed when it ends; exit code the guest's (src/cli/vm_common.rs:192)",
		Cases: []Case{
			{Argv: []string{"machine", "exec", "--name", "fx", "-w", "/workspace", "-e", "FOO=baz", "--", "sh", "-c", `echo "$FOO $TOKEN"; cat hello.txt; exit 3`},
				Code: 3, Fixture: "exec.txt", Source: "src/cli/vm_common.rs:208 (print_output_and_exit)"},
			{Argv: []string{"machine", "exec", "--name", "fx", "--timeout", "1s", "--", "sleep", "5"}, Code: 124,
				Source: "crates/smolvm-agent/src/process.rs:64 (TIMEOUT_EXIT_CODE)"},
			{Argv: []string{"machine", "exec", "--name", "ghost", "--", "true"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/vm_common.rs:86 (ensure_running_and_connect)"},
			{Argv: []string{"machine", "exec", "--name", "fx-idle", "--", "true"}, Code: 1,
				Stderr: "agent operation failed: connect: machine 'fx-idle' is not running. Use 'smolvm machine start --name fx-idle' first.",
				Source: "src/cli/vm_common.rs:113"},
			{Argv: []string{"machine", "exec", "-n", "fx", "--", "true"}, Code: 2, Stderr: "unexpected argument '-n' found",
				Source: "src/cli/machine.rs:2632 (clap: no short -n)"},
		},
	},
	{
		ID: "exec-stdin", Use: "smolvm machine exec --name NAME -i -w DIR [-e K=V]... -- CMD...",
		Source: "src/cli/machine.rs:2626 (ExecCmd)",
		Flags:  []Flag{{"-i", "src/cli/machine.rs:2658", "stdin forwarded to the guest"}},
		Output: "the guest's output; exit code the guest's (src/cli/machine.rs:2770)",
		Cases: []Case{
			{Argv: []string{"machine", "exec", "--name", "fx", "-i", "-w", "/workspace", "--", "sh", "-c", "tr a-z A-Z"}, Stdin: "piped in\n",
				Fixture: "exec-stdin.txt", Source: "src/cli/machine.rs:2770"},
		},
	},
	{
		ID: "exec-stream", Use: "smolvm machine exec --name NAME --stream [-i] -w DIR [-e K=V]... -- CMD...",
		Source: "src/cli/machine.rs:2626 (ExecCmd)",
		Flags:  []Flag{{"--stream", "src/cli/machine.rs:2666", "output printed as it arrives (ExecEventPrinter, src/cli/machine.rs:2844)"}},
		Output: "the guest's output as it arrives; exit code the guest's (src/cli/machine.rs:2784)",
		Cases: []Case{
			{Argv: []string{"machine", "exec", "--name", "fx", "--stream", "-w", "/workspace", "--", "sh", "-c", "echo one; echo two; exit 5"},
				Code: 5, Fixture: "exec-stream.txt", Source: "src/cli/machine.rs:2784"},
		},
	},
	{
		ID: "exec-tty", Use: "smolvm machine exec --name NAME -it -w DIR -e TERM=T [-e K=V]... -- CMD...",
		Source: "src/cli/machine.rs:2626 (ExecCmd)",
		Flags:  []Flag{{"-t", "src/cli/machine.rs:2662", "raw mode only when smolvm's stdin is a terminal (src/agent/terminal.rs); the plugin gives it a pty"}},
		Output: "the guest's terminal output; exit code the guest's (src/cli/machine.rs:2770)",
		Cases: []Case{
			{Argv: []string{"machine", "exec", "--name", "fx", "-it", "-w", "/workspace", "-e", "TERM=xterm", "--", "sh", "-c", `echo "term $TERM"`},
				Fixture: "exec-tty.txt", Source: "src/cli/machine.rs:2770"},
		},
	},
	{
		ID: "exec-detach", Use: "smolvm machine exec --name NAME -d -w DIR [-e K=V]... -- CMD...",
		Source: "src/cli/machine.rs:2626 (ExecCmd)",
		Flags:  []Flag{{"-d", "src/cli/machine.rs:2673", "conflicts with -i, -t and --stream"}},
		Output: "text: the guest process id and a newline (src/cli/machine.rs:2758)",
		Cases: []Case{
			{Argv: []string{"machine", "exec", "--name", "fx", "-d", "-w", "/workspace", "--", "sleep", "30"},
				Fixture: "exec-detach.txt", Source: "src/cli/machine.rs:2758"},
			{Argv: []string{"machine", "exec", "--name", "fx", "-d", "--stream", "--", "true"}, Code: 2,
				Stderr: "the argument '--detach' cannot be used with '--stream'", Source: "src/cli/machine.rs:2673 (clap conflicts_with_all)"},
		},
	},
	{
		ID: "cp-in", Use: "smolvm machine cp HOSTFILE NAME:GUESTPATH",
		Source: "src/cli/machine.rs:4886 (CpCmd), run at src/cli/machine.rs:4923",
		Flags: []Flag{{"SRC", "src/cli/machine.rs:4888", "split at its first ':' when it has one: then a download; a host path must hold no ':'"},
			{"DST", "src/cli/machine.rs:4892", ""}},
		Output: "nothing on stdout (progress on stderr)",
		Cases: []Case{
			{Argv: []string{"machine", "cp", "{PROJ}/hello.txt", "fx:/tmp/hello-copy.txt"}, Fixture: "cp-in.txt", Source: "src/cli/machine.rs:4966"},
			{Argv: []string{"machine", "cp", "{PROJ}/hello.txt", "{TMP}/x"}, Code: 1,
				Stderr: "config operation failed: cp: one of SRC or DST must use machine:path syntax (e.g., myvm:/workspace/file)",
				Source: "src/cli/machine.rs:4933"},
			{Argv: []string{"machine", "cp", "{PROJ}/hello.txt", "ghost:/tmp/x"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/machine.rs:4947 (ensure_running_and_connect)"},
		},
	},
	{
		ID: "cp-out", Use: "smolvm machine cp NAME:GUESTPATH HOSTFILE",
		Source: "src/cli/machine.rs:4886 (CpCmd)",
		Output: "nothing on stdout; the file is written on the host",
		Cases: []Case{
			{Argv: []string{"machine", "cp", "fx:/tmp/hello-copy.txt", "{TMP}/hello-back.txt"}, Fixture: "cp-out.txt", Source: "src/cli/machine.rs:4990"},
		},
	},
	{
		ID: "data-dir", Use: "smolvm machine data-dir --name NAME",
		Source: "src/cli/machine.rs:4551 (DataDirCmd)",
		Flags:  []Flag{{"--name", "src/cli/machine.rs:4553", "required"}},
		Output: "text: the machine's data dir, <cache>/smolvm/vms/<sha256(name)[:16]> (src/agent/manager.rs:235), and a newline",
		Cases: []Case{
			{Argv: []string{"machine", "data-dir", "--name", "fx"}, Fixture: "data-dir.txt", Source: "src/cli/machine.rs:4567"},
			{Argv: []string{"machine", "data-dir", "--name", "ghost"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/machine.rs:4564"},
		},
	},
	{
		ID: "egress-events", Use: "smolvm machine egress-events --name NAME --json --limit N",
		Source: "src/cli/machine.rs:4047 (EgressEventsCmd), src/agent/manager.rs:406 (read_egress_denials)",
		Flags: []Flag{{"--name", "src/cli/machine.rs:4049", "not looked up: an unknown machine has no denials"},
			{"--json", "src/cli/machine.rs:4057", ""}, {"--limit", "src/cli/machine.rs:4053", "usize, newest kept, default 200"}},
		Output: "a pretty JSON array of EgressDenialFields objects, oldest first, [] when none (src/cli/machine.rs:4073)",
		Cases: []Case{
			{Argv: []string{"machine", "egress-events", "--name", "fx", "--json", "--limit", "2"}, Fixture: "egress-events.json",
				Source: "src/cli/machine.rs:4073"},
			{Argv: []string{"machine", "egress-events", "--name", "ghost", "--json", "--limit", "2"}, Fixture: "egress-events-none.json",
				Source: "src/agent/manager.rs:409"},
		},
	},
	{
		ID: "stop", Use: "smolvm machine stop --name NAME",
		Source: "src/cli/machine.rs:3950 (StopCmd), src/cli/vm_common.rs:1923 (stop_vm_named)",
		Flags:  []Flag{{"--name", "src/cli/machine.rs:3952", ""}},
		Output: "text: \"Stopping machine 'NAME'...\" then \"Stopped machine: NAME\" (src/cli/vm_common.rs:2011, 2032)",
		Cases: []Case{
			{Argv: []string{"machine", "stop", "--name", "fx"}, Fixture: "stop.txt", Source: "src/cli/vm_common.rs:2032"},
			{Argv: []string{"machine", "stop", "--name", "fx"}, Fixture: "stop-stopped.txt", Source: "src/cli/vm_common.rs:2006 (exit 0)"},
			{Argv: []string{"machine", "stop", "--name", "ghost"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/vm_common.rs:1940"},
		},
	},
	{
		ID: "pack", Use: "smolvm pack create --from-vm NAME -o PATH",
		Source: "src/cli/pack.rs:79 (PackCreateCmd), src/cli/pack.rs:527 (pack_from_vm), src/pack_export.rs:76",
		Flags: []Flag{{"--from-vm", "src/cli/pack.rs:91", "the machine must be stopped"},
			{"-o", "src/cli/pack.rs:99", "names the stub executable; PATH.smolmachine is written beside it; an -o ending .smolmachine is refused"}},
		Output: "text: progress (src/cli/pack.rs:561 ... 750); the files PATH and PATH.smolmachine",
		Cases: []Case{
			{Argv: []string{"pack", "create", "--from-vm", "fx", "-o", "{TMP}/snap"}, Fixture: "pack.txt", Source: "src/cli/pack.rs:746"},
			{Argv: []string{"pack", "create", "--from-vm", "fx", "-o", "{TMP}/snap.smolmachine"}, Code: 1,
				Stderr: "config operation failed: pack create: --output names the executable stub, not the .smolmachine sidecar (which is created automatically as '<output>.smolmachine'). Use --output {TMP}/snap instead.",
				Source: "src/cli/pack.rs:199"},
			{Argv: []string{"pack", "create", "--from-vm", "fx-idle", "-o", "{TMP}/idle"}, Code: 1,
				Stderr: "agent operation failed: pack from VM: VM 'fx-idle' was created from a local image (local-dir:{ROOTFS}). `pack create --from-vm` can only snapshot VMs created from a REGISTRY image — local archives and rootfs directories are flattened on boot and have no registry manifest to re-pull. Recreate the machine from a registry reference to pack it.",
				Source: "src/pack_export.rs:136"},
			{Argv: []string{"pack", "create", "--from-vm", "ghost", "-o", "{TMP}/ghost"}, Code: 1,
				Stderr: "agent operation failed: pack from VM: VM 'ghost' not found", NotFound: true, Source: "src/cli/pack.rs:533"},
			{Setup: [][]string{{"machine", "start", "--name", "fx"}},
				Argv: []string{"pack", "create", "--from-vm", "fx", "-o", "{TMP}/snap2"}, Code: 1,
				Stderr: "agent operation failed: pack from VM: VM 'fx' is running. Stop it first with: smolvm machine stop --name fx",
				Source: "src/cli/pack.rs:536"},
		},
	},
	{
		ID: "create-from", Use: "smolvm machine create --name NAME --from PATH.smolmachine [-v ...] [-e ...] [--secret-env ...] [--allow-host ...] -w DIR [--label ...] -- sleep infinity",
		Source: "src/cli/machine.rs:3086 (--from), src/cli/machine.rs:3265 (run_from_smolmachine)",
		Flags:  []Flag{{"--from", "src/cli/machine.rs:3086", "conflicts with --image and --smolfile"}},
		Output: "text: \"Created machine: NAME\" and a summary",
		Cases: []Case{
			{Argv: []string{"machine", "create", "--name", "fx-back", "--from", "{TMP}/snap.smolmachine", "-w", "/workspace", "--", "sleep", "infinity"},
				Fixture: "create-from.txt", Source: "src/cli/machine.rs:3265"},
			{Argv: []string{"machine", "create", "--name", "fx-back2", "--from", "{TMP}/none.smolmachine"}, Code: 1,
				Stderr: "config operation failed: create from .smolmachine: file not found: {TMP}/none.smolmachine", Source: "src/cli/machine.rs:3269"},
			{Argv: []string{"machine", "create", "--name", "fx-back2", "--from", "{TMP}/snap.smolmachine", "--image", "alpine"}, Code: 2,
				Stderr: "the argument '--from <PATH>' cannot be used with '--image <IMAGE>'", Source: "src/cli/machine.rs:3086 (clap conflicts_with_all)"},
		},
	},
	{
		ID: "delete", Use: "smolvm machine delete --name NAME -f",
		Source: "src/cli/machine.rs:3974 (DeleteCmd), src/cli/vm_common.rs:2262 (delete_vm)",
		Flags: []Flag{{"--name", "src/cli/machine.rs:3976", ""},
			{"-f", "src/cli/machine.rs:3980", "always: without it smolvm prompts on stderr and, on EOF or any answer but y, prints Cancelled and exits 0 deleting nothing"}},
		Output: "text: \"Stopping machine 'NAME'...\" when running, \"Cleaning up data directory for vm: NAME\" when it has one, \"Deleted machine: NAME\" (src/cli/vm_common.rs:2403)",
		Cases: []Case{
			{Setup: [][]string{{"machine", "stop", "--name", "fx"}},
				Argv: []string{"machine", "delete", "--name", "fx", "-f"}, Fixture: "delete.txt", Source: "src/cli/vm_common.rs:2403"},
			{Argv: []string{"machine", "delete", "--name", "fx-idle"}, Fixture: "delete-cancelled.txt",
				Stderr: "Delete machine 'fx-idle'? [y/N]", Source: "src/cli/vm_common.rs:2352 (question on stderr; EOF cancels, exit 0)"},
			{Argv: []string{"machine", "delete", "--name", "ghost", "-f"}, Code: 1, Stderr: "vm not found: ghost", NotFound: true,
				Source: "src/cli/vm_common.rs:2268"},
		},
	},
}

// SourceRE is what every Source must start with: a file of smolvm's and a
// line in it.
var SourceRE = regexp.MustCompile(`^(src|crates)/[A-Za-z0-9_/.-]+\.rs:[0-9]+\b`)
