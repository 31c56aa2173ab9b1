package sdk

import "io"

// AttachStreams are the two ends of an attach session. On the plugin side the
// SDK fills them from the gRPC stream; on the core side the caller fills them
// from its terminal. Nil fields mean "none".
type AttachStreams struct {
	// Stdin delivers the user's input; io.EOF means the user closed it,
	// unless the Attach context is already cancelled: then the user
	// detached, and the agent's stdin should stay as it is.
	Stdin io.Reader
	// Stdout and Stderr receive the agent's output. In TTY mode everything
	// goes to Stdout.
	Stdout io.Writer
	Stderr io.Writer
	// Resize delivers terminal size changes.
	Resize <-chan TermSize
	// Signals delivers signal names ("INT", "TERM", ...) to forward.
	Signals <-chan string
}
