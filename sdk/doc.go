// Package sdk is the public, stable SDK for bot-bottle backend plugins. A
// backend runs bottles somewhere — Docker, microVMs, Podman, a cloud sandbox
// — and bot-bottle drives it over gRPC with hashicorp/go-plugin. This module
// imports nothing from bot-bottle's core, so a backend depends on it alone.
//
// This package is the author-facing API and its stability promise: within
// a major version of the module (sdk/vX), nothing here is removed or
// changed incompatibly, and nothing here names a go-plugin, gRPC or hclog
// type, so their upgrades are not SDK breaks (a test holds the package to
// that). The core's side of the protocol — starting a plugin, the gRPC
// client, dial options, remote errors — is package sdk/host, which is
// outside that promise.
//
// # Writing a backend
//
// A backend is a separate executable named bot-bottle-plugin-<name>. Its
// main does nothing but call Serve:
//
//	package main
//
//	import "github.com/bot-bottle/bot-bottle/sdk"
//
//	type backend struct {
//		sdk.UnimplementedBackend // optional methods answer "not supported"
//	}
//
//	func (b *backend) Info(ctx context.Context) (sdk.Info, error) { ... }
//	func (b *backend) Prepare(ctx context.Context, spec sdk.Spec) (sdk.Plan, error) { ... }
//	func (b *backend) Launch(ctx context.Context, spec sdk.Spec, plan sdk.Plan, progress func(sdk.Progress)) (sdk.Handle, error) { ... }
//	func (b *backend) Attach(ctx context.Context, req sdk.AttachRequest, s sdk.AttachStreams) (sdk.ExitStatus, error) { ... }
//	func (b *backend) Stop(ctx context.Context, req sdk.StopRequest) ([]string, error) { ... }
//	func (b *backend) List(ctx context.Context) ([]sdk.Bottle, error) { ... }
//
//	func main() {
//		log := sdk.NewLogger("mybackend") // a *slog.Logger
//		sdk.Serve(&backend{log: log}, sdk.WithLogger(log))
//	}
//
// Build it and install it:
//
//	go build -o bot-bottle-plugin-mybackend .
//	bot-bottle plugins install ./bot-bottle-plugin-mybackend
//	bot-bottle start shell --backend mybackend
//
// Install copies the binary into $BOT_BOTTLE_HOME/plugins/, asks it for its
// Info and records its name, version, protocol and sha256 in
// $BOT_BOTTLE_HOME/plugins.lock.hcl; from then on bot-bottle refuses to run
// that binary if it changes, until it is installed again, and `bot-bottle
// plugins verify` checks every installed plugin. While developing, skip the
// lock with BOT_BOTTLE_DEV_PLUGINS=mybackend=/abs/path/to/binary (the
// preflight says so). bot-bottle also finds plugins next to its own
// executable, on $PATH, or at a `path` in a plugin block of plugins.hcl
// (pinned there with `sha256`).
//
// # Rules a backend must follow
//
//   - Print nothing to stdout before Serve, not even from an init function or
//     a logging library: stdout carries go-plugin's handshake line, and
//     anything before it breaks the plugin with "Unrecognized remote plugin
//     message". Log with the *slog.Logger NewLogger returns (JSON on stderr,
//     at the core's level); the core shows those lines under your plugin's
//     name.
//   - Keep no state between calls. Launch returns a Handle; put in its Data
//     everything a later Attach, Exec, Commit or Stop needs. The core stores
//     the handle and hands it back, often to a fresh process of your plugin
//     started from another terminal.
//   - Never store, log or bake into an image the values in Spec.Env: they are
//     the user's secrets, passed through for the agent's process only. Note
//     that `docker commit` and `podman commit` copy a container's env into
//     the image config: keep Env out of the container's config, or scrub
//     the committed image (see Spec.Env).
//   - Validate every identity with ValidIdentity before it names a path, a
//     resource or a label filter, and refuse others with CheckName's error.
//   - Stop must remove every resource the bottle has (but never a committed
//     snapshot), succeed when there is nothing left, and work with only
//     StopRequest.Identity when a crash left no handle. Label or name your
//     resources from the identity so that List and Stop can find them.
//   - Respect context cancellation. In Attach, a cancelled context means the
//     user detached: return ExitStatus{Detached: true} and leave the agent
//     running. A detach during the agent's first start should let the start
//     finish first: the core waits a few seconds for your answer, so that
//     the List that follows finds the agent running.
//   - Return errors with clear, one-line messages. Wrap ErrNotFound and
//     ErrNotSupported where they apply; the core prefixes your plugin's name.
//   - Egress is deny by default. A backend that cannot enforce Spec.Egress
//     (no proxy, no firewall) gives the bottle no network at all, or refuses
//     a non-empty Egress in Prepare; never an unfiltered network. Declare
//     CapLiveEgress only if UpdateEgress widens a running bottle's egress,
//     and CapEgressAudit only if you append EgressEvent lines to
//     Spec.EgressLog (the core sets EgressLog only for backends that
//     declare it).
//   - Declare CapCredentials only if your egress proxy puts each of
//     Spec.Credentials on the wire in place of its placeholder, toward the
//     credential's Hosts only, and CredentialRevoker revokes one live. The
//     values are secrets held by the proxy alone: never in the agent's
//     environment, filesystem, image, container config, command lines,
//     logs or your handle. The core sets Spec.Credentials only for backends
//     that declare it, and refuses to start an agent with credentials on
//     another (the operator can still pass a value through env).
//
// # Configuration, identity, status
//
// A plugin's config block from plugins.hcl reaches it only through its
// environment, at process start: PluginConfig returns it as JSON ({} when
// there is none), for every call alike, including those without a Spec
// (Info, List, Stop by identity). HomeID says which bot-bottle home the
// plugin serves (see HomeID for the empty value).
//
// Identities and names follow one rule, ValidName: a DNS label (1 to 63
// lower-case letters, digits and '-', not starting or ending with '-'). The
// core mints identities as Slug(agent) + "-" + 5 random base36 characters.
// backendtest.NameCases is the table every validator in the project is run
// against; run it against yours with backendtest.CheckNameRule.
//
// List reports Bottle.Status as StatusCreated, StatusRunning or
// StatusExited; Bottle.StartedAt is RFC 3339.
//
// # What the core prints
//
// Plan.Preflight lines and Plan.Warnings are shown before a launch;
// Progress messages during it; Stop's returned strings (one short name per
// removed resource) after "removed" in `bot-bottle prune`; CommitResult.Notes
// one per line after a commit. Write them for the operator.
//
// # Optional features
//
// Declare what you support in Info.Capabilities and implement the matching
// interface: CapCommit → Committer, CapExec → Execer, CapCopy → Copier,
// CapLiveEgress → EgressUpdater, CapCredentials → CredentialRevoker,
// CapQueueSync → QueueSyncer. The core checks a capability before it asks.
// Embedding UnimplementedBackend keeps your plugin compiling when later SDK
// versions add optional methods.
//
// # Versions and the wire
//
// Serve speaks go-plugin over gRPC only, with mutual TLS (certificates the
// core makes for each start; go-plugin's AutoMTLS with a core of an earlier
// SDK), a handshake cookie and protocol versions negotiated through go-plugin's VersionedPlugins: the
// core offers every version it speaks and the plugin picks the newest it
// shares. This SDK speaks ProtocolVersion 2 and still 1: version 2 drops
// Spec's config and transcript fields and the attach heartbeat, and the
// messages stay wire-compatible, so a core built with this SDK drives a
// plugin built against the previous one and the other way round. Info also
// carries APIVersion, a semantic version the core checks by its major.
// gRPC message limits are raised to 256 MiB for copy-in/out archives. Serve
// exits the plugin when the process that started it dies, even by SIGKILL,
// so no plugin outlives its core.
//
// # Releases
//
// The SDK is its own Go module, github.com/bot-bottle/bot-bottle/sdk,
// released by tags of the form sdk/vX.Y.Z on the bot-bottle repository (see
// sdk/README.md for the steps). Until a release is tagged, build against a
// checkout of the repository with a go.work file (the skeleton's README
// has the recipe, which works offline).
//
// # Testing a backend
//
// Package backendtest (sdk/backendtest) is the project's own conformance
// suite, exported: RunConformance checks, one subtest per contract item,
// everything the core relies on — Info and capability gating, exit codes,
// stdout and stderr apart, stdin's end, terminal resize, detach, a Stop
// that is complete and repeatable and works by identity alone, a handle
// from one plugin process driving the bottle from a fresh one, errors as
// the documented status codes, and Exec, CopyIn/CopyOut and Commit with
// resume where you declare them; and the promises to users you declare in
// its Harness (the project, a secret kept out of snapshots, no network with
// an empty allowlist, the queue and helper, homes, snapshots, hardening,
// image builds). Drive your built binary with
// backendtest.Start (exactly as the core starts plugins) or an
// implementation with backendtest.InProcess (real gRPC, no binary).
// examples/backend-skeleton in the bot-bottle repository is a complete
// out-of-tree backend that does both.
package sdk
