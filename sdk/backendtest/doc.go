// Package backendtest proves a bot-bottle backend correct with the same
// checks the project holds its own backends to. Call RunConformance from
// your plugin's tests:
//
//	func TestConformance(t *testing.T) {
//		bin := backendtest.Build(t, ".", "mybackend")
//		backendtest.RunConformance(t, backendtest.Harness{
//			New:   func(t testing.TB) sdk.Backend { return backendtest.Start(t, bin) },
//			Agent: sdk.Agent{Name: "conf", Image: "…", Workdir: "/tmp"},
//		})
//	}
//
// Start runs your built binary exactly as the core does (a new process each
// call, so the suite can check that a handle from one process drives the
// bottle from another, after the first was killed as a core's exit kills
// it). InProcess serves a Backend value over real gRPC inside the test
// process, through go-plugin's in-process serving (ServeConfig.Test), for
// fast tests that still cross the wire; killing it only stops the server,
// so what survives a plugin process is proven by Start alone.
//
// Each contract item is a subtest (ItemExitCode, ItemResize, …) and each
// failure message starts with the item's words, so `go test -run
// 'TestConformance/TerminalResize'` reruns one item. The agent image must
// have a POSIX sh, cat, echo, sleep and stty (busybox has them all).
//
// # The user's promises
//
// Beyond the mechanics, the suite checks what users rely on, each item for
// a backend that declares it in its Harness: the project at the workdir,
// writable, and never written with CopyCwd (Project, ProjectUID); no
// network at all with an empty allowlist, and a warning where an allowlist
// cannot be enforced (Egress); the queue read-only but for its inbox, the
// helper executable and read-only (Queue); with queue_sync, requests
// collected once and decisions delivered once by SyncQueue, files that are
// no request left behind (QueueSyncOnce); List of its own home only
// (NewInHome); snapshots kept by Stop and removed by RemoveSnapshots and the
// RemoveSnapshot hook (SnapshotContains, SnapshotFiles); the hardening it
// declares, seen from inside (Hardening); Dockerfiles built and used and a
// vanished committed image fallen back from with a note (BuildsImages).
// Every backend is held to the secret's promise: a Spec.Env value reaches
// the agent and is in no plan, handle, List, Info or snapshot (with
// commit, set SnapshotContains so the suite can look inside your format).
//
// # Errors the suite expects
//
// A declined optional call (a capability the backend does not declare)
// fails with sdk.ErrNotSupported, which travels as gRPC Unimplemented;
// embedding sdk.UnimplementedBackend does that. A bottle, path or snapshot
// that does not exist is sdk.ErrNotFound, gRPC NotFound. Messages are one
// line. Stop of something that does not exist succeeds. List reports a
// bottle whose agent runs as sdk.StatusRunning, "running" (prune keeps a detached bottle only
// then).
package backendtest
