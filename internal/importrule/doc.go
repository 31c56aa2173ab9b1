// Package importrule holds the test of the tree's layout rule: code under
// plugins/ (the backends and what they share) builds on the SDK and on
// plugins/internal, never on the core's internal/ — a backend is a separate
// binary that a third party could write, and what it needs of the core's
// rules lives in the SDK.
package importrule
