// Package buildsrc holds the rules a backend that builds agent images
// follows to pick what it builds from, so that every backend builds a
// Dockerfile in the same directory.
package buildsrc

import (
	"path/filepath"

	"github.com/bot-bottle/bot-bottle/sdk"
)

// ContextDir is the build context of dockerfile (the agent's own, or the
// per-bottle one the core wrote for it): the agent's context when it names
// one, else its Dockerfile's directory, else (an image agent's per-bottle
// Dockerfile) dockerfile's own directory.
func ContextDir(a sdk.Agent, dockerfile string) string {
	switch {
	case a.ContextDir != "":
		return a.ContextDir
	case a.Dockerfile != "":
		return filepath.Dir(a.Dockerfile)
	}
	return filepath.Dir(dockerfile)
}
