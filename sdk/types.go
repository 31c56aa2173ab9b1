package sdk

import "github.com/bot-bottle/bot-bottle/sdk/egresslog"

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
	CapEgressAudit Capability = "egress_audit" // connection attempts are appended to Spec.EgressLog
	// CapCredentials: the backend's egress proxy puts Spec.Credentials on
	// the wire in place of their placeholders (see Credential), and
	// CredentialRevoker revokes one live. A backend may declare it only
	// where it also enforces the egress allowlist.
	CapCredentials Capability = "credentials"
	// CapQueueSync: the bottle's request queue lives where the host cannot
	// mount it (a pod on a remote cluster), and QueueSyncer moves it.
	CapQueueSync Capability = "queue_sync"
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
	// Credentials the agent declares; with CapCredentials the backend puts
	// them on the wire (see Credential). Never values.
	Credentials []Credential
}

// Spec is everything a backend needs to prepare and launch one bottle.
type Spec struct {
	Identity string
	Agent    Agent
	// Cwd is the project directory on the host, or empty for none.
	Cwd     string
	CopyCwd bool
	// BottleDockerfile is the absolute host path of a per-bottle Dockerfile
	// (the bottle's approved capability requests, FROM the agent's image);
	// it is a path, never the text, and "" when there is none. It takes
	// precedence over the agent's own image source; its build context is
	// Agent.ContextDir.
	BottleDockerfile string
	// CommittedImage is the reference a previous Commit returned; it takes
	// precedence over everything when the backend still has it.
	CommittedImage string
	// QueueDir is the host side of the bottle's request queue. Mount it
	// read-only at GuestQueueDir, and its QueueInbox subdirectory read-write
	// on top (GuestQueueDir/inbox): the bottle may drop requests, never
	// write a decision.
	QueueDir string
	// Env holds passed-through secret values. Never log, store or bake them
	// into an image. Beware that `docker commit` and `podman commit` copy a
	// container's environment into the image config: a backend that commits
	// must keep Env out of the container's config (pass it to the agent's
	// process only, for example through a file or an exec's environment) or
	// scrub it from the committed image.
	Env map[string]string
	// Credentials are the values of Agent.Credentials by name, for backends
	// with CapCredentials (the core sets it for no other): secrets, handled
	// as Env is — never logged, stored, baked into an image, and never put
	// where the agent can read them (its environment, filesystem, image);
	// only the egress proxy holds them. The agent's Env has each
	// credential's EnvName set to its Placeholder instead.
	Credentials map[string]string
	// Egress is the effective allowlist of host[:port] rules. Egress is deny
	// by default: a backend that cannot enforce the allowlist (no proxy, no
	// firewall) must give the bottle no network at all, or refuse in Prepare
	// with a one-line error when Egress is not empty; it must never give an
	// unfiltered network. The plugin's own configuration arrives in the
	// environment (PluginConfig), not in the Spec.
	Egress []string
	// Command is the command to run as the agent (already resolved by the
	// core: the user's override, the agent's command or its resume command).
	Command []string
	// TTY says the agent will be attached from a terminal (the core decides
	// it from its own stdin): create the agent's process with a pty when it
	// is set. Each AttachRequest says again whether that session has a
	// terminal; a bottle launched with TTY may be attached without one (a
	// detached start, a script) and the other way round, so Attach follows
	// AttachRequest.TTY for its streams and uses Spec.TTY only for how the
	// process was created.
	TTY bool
	// Resume says the bottle is being resumed (Command is then the agent's
	// resume command, and CommittedImage may be set).
	Resume bool
	// EgressLog is a host file a backend with CapEgressAudit appends
	// EgressEvent JSON lines to, one per connection attempt. The core sets it
	// only for backends that declare CapEgressAudit; otherwise it is "".
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
	// EnvEgress says in the agent's environment what its egress is:
	// EgressOff, EgressProxy or EgressAllowlist. The `bottle` helper and
	// the agents' login messages read it, so that a bottle with no network
	// says so instead of "Temporary failure in name resolution".
	EnvEgress = "BOT_BOTTLE_EGRESS"
)

// Values of EnvEgress.
const (
	// EgressOff: no network at all (an empty allowlist).
	EgressOff = "off"
	// EgressProxy: through the proxy in HTTPS_PROXY/HTTP_PROXY, which
	// answers refusals with a reason and lists them (`bottle egress`).
	EgressProxy = "proxy"
	// EgressAllowlist: the backend enforces the allowlist without a proxy
	// the bottle can ask (a VM's own filter, say).
	EgressAllowlist = "allowlist"
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
	// Version is the backend's own version of Data's format, so that a newer
	// plugin can read (or refuse with a clear error) a handle an older one
	// wrote.
	Version uint32
	// Backend is informational: set it to your Info.Name. The core records
	// which backend a bottle runs on in its own metadata and never routes by
	// this field.
	Backend string
	// Identity is Spec.Identity: the core refuses to store a handle that
	// names another identity.
	Identity string
	Data     []byte
	// ImageUser is what Launch reports of the image the bottle booted (a
	// committed snapshot, the built Dockerfile, the agent's image): the
	// USER its configuration names, "root" when it names none, or "" when
	// the backend cannot tell. Not Agent.User, nor a user the backend
	// chose for this launch. The core records it so that an approved
	// capability RUN, which runs as root, switches back to this user.
	ImageUser string
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
	// TTY says this session has a terminal: raw bytes both ways, everything
	// on Stdout, Size and Resize apply. Without it, keep stdout and stderr
	// apart. See Spec.TTY.
	TTY  bool
	Size TermSize
	// Stdin says whether the caller will send input.
	Stdin bool
}

// ExitStatus is how an attached session ended.
type ExitStatus struct {
	Code int
	// Detached is true when the session ended but the agent is still running.
	Detached bool
}

// ExecRequest runs a one-off command in a running bottle, beside the agent,
// without a terminal.
//
// Exec on a bottle whose agent is not running (created, exited) fails with
// an error, not an exit code; on a bottle that is gone it fails with
// ErrNotFound. Stdin nil and Stdin empty are the same (protobuf does not
// tell them apart): the command reads end-of-file at once.
type ExecRequest struct {
	Handle  Handle
	Command []string
	// Workdir is where the command runs; "" means the agent's Workdir.
	Workdir string
	Stdin   []byte
	// User runs the command as that user; "" means the agent's User.
	User string
}

// ExecResult is the buffered result of an ExecRequest. A command that ran
// and exited non-zero is a result with its ExitCode and a nil error; an
// error from Exec means the command could not be run or its end was not
// seen (a runtime failure), never the command's own failure.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
}

// CommitResult names the snapshot a Commit made.
//
// Commit snapshots the bottle so that a later Launch with Spec.Resume
// starts from it (Spec.CommittedImage is Image then). Who removes
// snapshots: never Stop, which keeps them by contract. Snapshot files a
// backend keeps in the snapshotDir the core gave it are removed with the
// bottle's state by `bot-bottle rm`; a snapshot in the backend's own store
// (an image) stays until the operator removes it, so label it with
// LabelIdentity and LabelHome to make it findable.
type CommitResult struct {
	// Image is the reference the core stores and hands back as
	// Spec.CommittedImage; it is shown to the operator.
	Image string
	// Notes are one-line messages for the operator, printed one per line
	// after a commit (e.g. what was left out of the snapshot).
	Notes []string
}

// StopRequest tears a bottle down. Handle may be nil when the launch never
// returned one (a crash); then the backend finds resources by Identity.
//
// Stop returns a short name of each resource it removed (for example
// "container bot-bottle-shell-7k2qz"); `bot-bottle prune` prints them one
// per line after "removed". Return none when there was nothing to remove.
type StopRequest struct {
	Handle   *Handle
	Identity string
	// RemoveSnapshots says the bottle is being removed for good (rm, or
	// prune of an identity whose state is gone): remove every snapshot of
	// the identity too. Without it Stop keeps snapshots, because a kept
	// bottle resumes from them.
	RemoveSnapshots bool
}

// Bottle is one bottle a backend has, as List reports it.
type Bottle struct {
	Identity string
	Agent    string
	// Status is StatusCreated (launched, agent not started), StatusRunning
	// or StatusExited where the backend can tell; the core shows other words
	// as they are. Say StatusRunning while the agent runs: prune keeps a
	// detached bottle only when it is.
	Status string
	// StartedAt is when the bottle was launched, in RFC 3339 (UTC, seconds,
	// like time.RFC3339), or "" when the backend does not know. The core
	// shows a running bottle's age from it.
	StartedAt string
	// Resources are short names of what the bottle holds (as Stop would
	// report them), shown to the operator for bottles the core has no record
	// of; informational.
	Resources []string
	// Image is the image or snapshot the bottle runs from, informational.
	Image  string
	Handle *Handle
	// Snapshots are the references of the snapshots (commits) the backend
	// holds for this identity. An identity the backend holds nothing else
	// of is reported with Status StatusSnapshot, so that the core can find
	// snapshots whose bottle state is gone.
	Snapshots []string
}

// The bottle statuses the core understands in Bottle.Status.
const (
	StatusCreated = "created" // launched; the agent has not started
	StatusRunning = "running" // the agent is running
	StatusExited  = "exited"  // the agent has exited; the bottle still exists
	// StatusSnapshot: the backend holds only snapshots of the identity;
	// nothing runs and nothing else is left.
	StatusSnapshot = "snapshot"
	// StatusIdle: not a bottle but something the backend keeps for its
	// next starts (the docker backend's egress proxy of a home, between
	// bottles), listed under its own name so that prune removes it.
	StatusIdle = "idle"
)

// EgressEvent is one connection attempt from a bottle, as a backend reports
// it in Spec.EgressLog (one JSON object per line); see package egresslog,
// where it lives so that small proxies need not link this package.
type EgressEvent = egresslog.Event

// Values of EgressEvent.Kind.
const (
	EgressInject       = egresslog.KindInject
	EgressExfiltration = egresslog.KindExfiltration
	EgressRevoke       = egresslog.KindRevoke
)
