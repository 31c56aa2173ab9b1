package lifecycle

// queueDir returns the host side of the bottle's request queue.
func (e *Env) queueDir(id string) (string, error) { return "", nil }

// removeQueue drops the queue of a bottle that is being cleaned up.
func (e *Env) removeQueue(id string) {}

// isDetached reports whether the bottle was started with --detach.
func (e *Env) isDetached(id string) bool { return false }
