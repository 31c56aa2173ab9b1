package lifecycle

// queueDir returns the host side of the bottle's request queue.
func (e *Env) queueDir(id string) (string, error) { return "", nil }

// removeQueue drops the queue of a bottle that is being cleaned up.
func (e *Env) removeQueue(id string) {}

// isDetached reports whether the bottle runs detached on purpose.
func (e *Env) isDetached(id string) bool {
	d, err := e.Store.IsDetached(id)
	return d || err != nil
}

// identityTaken keeps a new identity from reusing one whose audit log
// survived an earlier cleanup.
func (e *Env) identityTaken(id string) bool { return false }
