package backend

import (
	"fmt"
	"slices"
	"strings"
)

// checkRuntime makes sure the engine has the OCI runtime the config names,
// so that a typo or a missing runsc fails Prepare in one line instead of
// the container's creation.
func (f engineFeatures) checkRuntime(name string) error {
	if name == "" || slices.Contains(f.runtimes, name) {
		return nil
	}
	return fmt.Errorf("docker plugin config: runtime %q is not registered with the engine (it has: %s); register it in daemon.json or fix runtime in plugins.hcl", name, strings.Join(f.runtimes, ", "))
}
