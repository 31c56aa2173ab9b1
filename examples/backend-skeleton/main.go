// Command bot-bottle-plugin-skeleton is an example bot-bottle backend,
// written to be copied: it runs the agent's command on the host, in fresh
// Linux namespaces (user, mount, pid, network, uts, ipc), as root there
// with no capabilities. A fresh network namespace has nothing but its
// loopback, so a bottle has no network at all. It needs no image registry,
// no daemon and no privileges. It does not isolate the filesystem: the
// agent reads and changes every file you can (README.md says what is and
// is not isolated).
//
// Read it in this order: config.go, backend.go and plan.go (the SDK glue:
// the six methods and what they tell the user, which a backend of your own
// keeps), then the runtime, which it replaces: runtime_bottle.go (a bottle
// on disk), runtime_lifecycle.go (launch, stop, list), runtime_attach.go,
// runtime_init.go (the first process in a bottle) and what the init uses:
// runtime_mounts.go, runtime_caps.go, runtime_proc.go, runtime_userns.go.
package main

import (
	"os"

	"github.com/bot-bottle/bot-bottle/sdk"
)

func main() {
	// A bottle's first process is this same binary, re-executed inside the
	// new namespaces under another name (see runtime_init.go).
	if os.Args[0] == initName {
		os.Exit(runInit(os.Args[1:]))
	}
	// Nothing may reach stdout before Serve: it carries the handshake.
	sdk.Serve(newBackend(sdk.PluginConfig(), sdk.HomeID()), sdk.WithLogger(sdk.NewLogger("skeleton")))
}
