package sdk

import "encoding/json"

// ProtocolVersion is the go-plugin protocol version this SDK serves. It only
// changes when the wire protocol breaks; additive changes keep it.
const ProtocolVersion = 1

// APIVersion is the semantic version of the Backend API this SDK implements.
// A core checks that a plugin lists one of the versions it supports.
const APIVersion = "1.0.0"

// Capability names an optional feature a backend supports. The core checks a
// capability before it calls the matching optional method.
type Capability string

const (
	CapCommit      Capability = "commit"       // Committer
	CapExec        Capability = "exec"         // Execer
	CapCopy        Capability = "copy"         // Copier
	CapLiveEgress  Capability = "live_egress"  // EgressUpdater: approvals apply without restart
	CapEgressAudit Capability = "egress_audit" // connection attempts are reported
)

// Info describes a plugin.
type Info struct {
	Name         string
	Version      string
	APIVersions  []string
	Capabilities []Capability
	// Details are free-form facts worth showing (e.g. the engine version).
	Details map[string]string
}

// Has reports whether the plugin declared capability c.
func (i Info) Has(c Capability) bool {
	for _, x := range i.Capabilities {
		if x == c {
			return true
		}
	}
	return false
}

// Agent is a resolved agent definition as the core hands it to a backend.
// Paths are absolute host paths.
type Agent struct {
	Name           string
	Description    string
	Dockerfile     string // path to the agent's Dockerfile, or empty when Image is set
	ContextDir     string // build context of Dockerfile
	Image          string // image reference, or empty when Dockerfile is set
	Command        []string
	ResumeCommand  []string
	Workdir        string
	EnvNames       []string
	TranscriptPath string
	Egress         []string
	CapAdd         []string
	User           string
}

// Spec is everything a backend needs to prepare and launch one bottle.
type Spec struct {
	Identity string
	Agent    Agent
	// Cwd is the project directory on the host, or empty for none.
	Cwd     string
	CopyCwd bool
	// BottleDockerfile is a per-bottle Dockerfile (from an approved capability
	// request); it takes precedence over the agent's own image source.
	BottleDockerfile string
	// CommittedImage is the reference a previous Commit returned; it takes
	// precedence over everything when the backend still has it.
	CommittedImage string
	// TranscriptDir is informational: the core itself restores the
	// transcript snapshot with CopyIn after Launch and before the agent
	// starts, so backends need do nothing with it. The core leaves it empty.
	TranscriptDir string
	// QueueDir is the host side of the bottle's request queue. Mount it
	// read-only at GuestQueueDir, and its QueueInbox subdirectory read-write
	// on top (GuestQueueDir/inbox): the bottle may drop requests, never
	// write a decision.
	QueueDir string
	// Env holds passed-through secret values. Never log, store or bake them
	// into an image.
	Env map[string]string
	// Egress is the effective allowlist of host[:port] rules.
	Egress []string
	// Config is the plugin's config block from plugins.hcl, as JSON.
	Config json.RawMessage
	// Command is the command to run as the agent (already resolved by the
	// core: the user's override, the agent's command or its resume command).
	Command []string
	// TTY asks for a terminal; the core decides it from its own stdin.
	TTY    bool
	Resume bool
	// EgressLog is a host file the backend appends EgressEvent JSON lines
	// to, one per connection attempt, where it can observe them. May be "".
	EgressLog string
	// Detach asks Launch to start the agent itself. Otherwise a backend may
	// defer the start to the first Attach so that no early output is lost.
	Detach bool
	// HelperBinary is the host path of the static `bottle` helper that a
	// backend puts on $PATH inside the bottle, read-only. May be empty.
	HelperBinary string
	// SnapshotDir is a per-bottle host directory a backend may use to keep
	// snapshot files (for backends whose snapshots are files).
	SnapshotDir string
}

// What every backend provides inside a bottle, so that the in-bottle helper
// and agents find the same things on every backend.
const (
	// GuestQueueDir is where the bottle's queue dir is mounted.
	GuestQueueDir = "/run/bot-bottle/queue"
	// GuestHelperPath is where the `bottle` helper is, read-only, on $PATH.
	GuestHelperPath = "/usr/local/bin/bottle"
	// QueueInbox is the one subdirectory of the queue a bottle may write.
	QueueInbox = "inbox"
	// EnvIdentity names the bottle's identity in the agent's environment.
	EnvIdentity = "BOT_BOTTLE_IDENTITY"
	// EnvQueueDir names GuestQueueDir in the agent's environment.
	EnvQueueDir = "BOT_BOTTLE_QUEUE"
)

// Labels every backend puts on the resources it creates, where it can.
const (
	LabelManaged  = "dev.bot-bottle.managed"
	LabelIdentity = "dev.bot-bottle.identity"
	LabelAgent    = "dev.bot-bottle.agent"
	// LabelHome carries HomeID(): one engine may serve several bot-bottle
	// homes (users, test runs), and List must only report the caller's.
	LabelHome = "dev.bot-bottle.home"
)

// PreflightLine is one key/value line of the preflight summary.
type PreflightLine struct {
	Key   string
	Value string
}

// Plan is the result of Prepare: what the launch will do, for the operator to
// read, and opaque data the backend gets back in Launch.
type Plan struct {
	Preflight []PreflightLine
	Warnings  []string
	Data      []byte
}

// Handle is the opaque, versioned reference to a launched bottle. The core
// stores it and hands it back to every later call, possibly in a different
// plugin process, so a backend must put everything it needs into Data.
type Handle struct {
	Version  uint32
	Backend  string
	Identity string
	Data     []byte
}

// Progress is one launch progress event (an image build step, a pull).
type Progress struct {
	Stage   string
	Message string
	ID      string
	Current int64
	Total   int64
}

// TermSize is a terminal size in character cells.
type TermSize struct {
	Rows uint16
	Cols uint16
}

// AttachRequest selects what to attach to and how.
type AttachRequest struct {
	Handle Handle
	TTY    bool
	Size   TermSize
	// Stdin says whether the caller will send input.
	Stdin bool
}

// ExitStatus is how an attached session ended.
type ExitStatus struct {
	Code int
	// Detached is true when the session ended but the agent is still running.
	Detached bool
}

// ExecRequest runs a one-off command in a running bottle.
type ExecRequest struct {
	Handle  Handle
	Command []string
	Workdir string
	Stdin   []byte
	User    string
}

// ExecResult is the buffered result of an ExecRequest.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// CommitResult names the snapshot a Commit made.
type CommitResult struct {
	Image string
	Notes []string
}

// StopRequest tears a bottle down. Handle may be empty when the launch never
// returned one (a crash); then the backend finds resources by Identity.
type StopRequest struct {
	Handle   *Handle
	Identity string
}

// Bottle is one bottle a backend has, as List reports it.
type Bottle struct {
	Identity string
	Agent    string
	// Status is "created" (launched, agent not started), "running" or
	// "exited" where the backend can tell; the core shows other words as
	// they are. Say "running" while the agent runs: prune keeps a detached
	// bottle only when it is.
	Status    string
	StartedAt string
	Resources []string
	Image     string
	Handle    *Handle
}

// EgressEvent is one connection attempt from a bottle, as a backend reports
// it in Spec.EgressLog (one JSON object per line).
type EgressEvent struct {
	Time     string `json:"time"` // RFC 3339
	Identity string `json:"identity"`
	Host     string `json:"host"`
	Port     int    `json:"port"`
	Allowed  bool   `json:"allowed"`
	// Rule is the allowlist rule that allowed it, or why it was refused.
	Rule   string `json:"rule,omitempty"`
	Reason string `json:"reason,omitempty"`
	Method string `json:"method,omitempty"` // CONNECT, GET, …
}
