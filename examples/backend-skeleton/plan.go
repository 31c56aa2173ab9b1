package main

import "github.com/bot-bottle/bot-bottle/sdk"

// plan.go is what Info and Prepare tell the user: SDK glue, kept with
// backend.go, and rewritten to say what your runtime does.

// What a skeleton bottle isolates, and what it does not (README.md says
// more). Info, Prepare and the README say the same, and no more than the
// code keeps.
const (
	isolation = "host binaries in new user, mount, pid, network, uts and ipc namespaces, " +
		"as root there with no capabilities"
	filesystem = "this host's, shared read-write as you; /tmp, /run and /dev/shm are private and empty " +
		"but for what the agent needs from them (project, queue, helper)"
)

// limits are Prepare's warnings for every bottle: what skeleton cannot
// close.
func limits(uid int) []string {
	w := []string{
		"the agent can read and change every file you can (your home, dotfiles your next shell runs, SSH keys, " +
			"bot-bottle's own home and its queue's decisions): skeleton is no boundary against an agent you do not trust",
		"Unix sockets outside /tmp, /run and /dev/shm (under your home, for instance) stay reachable, " +
			"and so do your other terminals under /dev/pts and whatever your supplementary groups open",
		"the agent can forge what Attach replays and reports (its bottle's logs and exit code) by moving a parent " +
			"directory; Stop and List do not rely on those files",
	}
	if uid == 0 {
		w = append(w, "you are root: the agent is root on this host's files, and nothing here contains it")
	}
	return w
}

func imageSource(spec sdk.Spec) string {
	switch {
	case spec.CommittedImage != "":
		return "committed image " + spec.CommittedImage
	case spec.BottleDockerfile != "":
		return "the per-bottle Dockerfile"
	case spec.Agent.Dockerfile != "":
		return "the agent's Dockerfile " + spec.Agent.Dockerfile
	case spec.Agent.Image != "":
		return "the agent's image " + spec.Agent.Image
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
