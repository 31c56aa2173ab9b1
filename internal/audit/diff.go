package audit

import (
	"strings"

	"github.com/pmezard/go-difflib/difflib"
)

// DockerfileDiff returns a unified diff from the bottle's current Dockerfile
// to the one a capability request would make, for the operator to read and
// for the audit record. Identical inputs give "".
func DockerfileDiff(old, new string) string {
	d := difflib.UnifiedDiff{
		A:        splitLines(old),
		B:        splitLines(new),
		FromFile: "Dockerfile",
		ToFile:   "Dockerfile (requested)",
		Context:  3,
	}
	// The only error source is the writer, and a strings.Builder never fails.
	s, _ := difflib.GetUnifiedDiffString(d)
	return s
}

// splitLines is difflib.SplitLines without its phantom empty last line for
// text that ends in a newline.
func splitLines(s string) []string {
	if s == "" {
		return nil
	}
	lines := strings.SplitAfter(s, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	} else {
		lines[len(lines)-1] += "\n"
	}
	return lines
}
