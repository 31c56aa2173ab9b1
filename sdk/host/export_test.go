package host

import "time"

// DetachGrace is detachGrace, for the tests of the bound.
const DetachGrace = 5 * time.Second
