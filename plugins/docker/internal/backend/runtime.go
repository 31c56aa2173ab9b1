package backend

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/docker/docker/client"
)

// checkRuntime makes sure the engine has the OCI runtime the config names,
// so that a typo or a missing runsc fails Prepare in one line instead of
// the container's creation.
func checkRuntime(ctx context.Context, c *client.Client, name string) error {
	if name == "" {
		return nil
	}
	info, err := c.Info(ctx)
	if err != nil {
		return engineErr(c, "read the engine's runtimes", err)
	}
	if _, ok := info.Runtimes[name]; ok {
		return nil
	}
	have := make([]string, 0, len(info.Runtimes))
	for n := range info.Runtimes {
		have = append(have, n)
	}
	sort.Strings(have)
	return fmt.Errorf("docker plugin config: runtime %q is not registered with the engine (it has: %s); register it in daemon.json or fix runtime in plugins.hcl", name, strings.Join(have, ", "))
}
