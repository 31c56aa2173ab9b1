package queue

import (
	"errors"
	"fmt"
)

// MaxPending is how many undecided requests one bottle may have. Each one
// waits for a human; past this many a bottle is flooding the operator, not
// asking, so the rest are refused (and the agent told) until some are
// decided.
const MaxPending = 20

// ErrTooManyPending is why a request over MaxPending is refused; it is what
// the agent reads.
var ErrTooManyPending = fmt.Errorf("this bottle already has %d pending requests, the most it may have; wait for the operator to decide some before asking again", MaxPending)

// PendingCount is how many of reqs are pending, by bottle.
func PendingCount(reqs []Request) map[string]int {
	n := map[string]int{}
	for _, r := range reqs {
		if r.Status == StatusPending {
			n[r.Identity]++
		}
	}
	return n
}

// IsTooManyPending reports whether err is a refusal for MaxPending.
func IsTooManyPending(err error) bool { return errors.Is(err, ErrTooManyPending) }
