// Package sdk is the public, stable SDK for bot-bottle backend plugins. A
// backend runs bottles somewhere — Docker, microVMs, Podman, a cloud sandbox
// — and bot-bottle drives it over gRPC with hashicorp/go-plugin. This module
// imports nothing from bot-bottle's core, so a backend depends on it alone.
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
//		sdk.Serve(&backend{}, sdk.WithLogger(sdk.NewLogger("mybackend")))
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
//     message". Log with the logger NewLogger returns (JSON on stderr); the
//     core shows those lines under your plugin's name.
//   - Keep no state between calls. Launch returns a Handle; put in its Data
//     everything a later Attach, Exec, Commit or Stop needs. The core stores
//     the handle and hands it back, often to a fresh process of your plugin
//     started from another terminal.
//   - Never store, log or bake into an image the values in Spec.Env: they are
//     the user's secrets, passed through for the agent's process only.
//   - Stop must remove every resource the bottle has (but never a committed
//     snapshot), succeed when there is nothing left, and work with only
//     StopRequest.Identity when a crash left no handle. Label or name your
//     resources from the identity so that List and Stop can find them.
//   - Respect context cancellation. In Attach, a cancelled context means the
//     user detached: return ExitStatus{Detached: true} and leave the agent
//     running.
//   - Return errors with clear, one-line messages. Wrap ErrNotFound and
//     ErrNotSupported where they apply; the core prefixes your plugin's name.
//
// # Optional features
//
// Declare what you support in Info.Capabilities and implement the matching
// interface: CapCommit → Committer, CapExec → Execer, CapCopy → Copier,
// CapLiveEgress → EgressUpdater. The core checks a capability before it asks.
// Embedding UnimplementedBackend keeps your plugin compiling when later SDK
// versions add optional methods.
//
// # Versions and the wire
//
// Serve speaks go-plugin over gRPC only, with AutoMTLS, the handshake cookie
// in Handshake, and protocol versions negotiated through VersionedPlugins
// (ProtocolVersion 1 today), so a newer core can still drive a plugin built
// against this SDK. Info also carries APIVersion, a semantic version the core
// checks. gRPC message limits are raised to MaxMessageSize for copy-in/out
// archives. Serve exits the plugin when the process that started it dies,
// even by SIGKILL, so no plugin outlives its core.
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
// resume where you declare them. Drive your built binary with
// backendtest.Start (exactly as the core starts plugins) or an
// implementation with backendtest.InProcess (real gRPC, no binary).
// examples/backend-skeleton in the bot-bottle repository is a complete
// out-of-tree backend that does both.
package sdk
