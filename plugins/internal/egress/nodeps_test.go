package egress

import (
	"os/exec"
	"strings"
	"testing"
)

// The kubernetes backend builds this package into kube-init, which runs in
// every pod: linking package sdk (and so gRPC and go-plugin) made it grow
// from 2.4 to 14.7 MB.
func TestNoPluginMachinery(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "github.com/bot-bottle/bot-bottle/sdk" || strings.HasPrefix(dep, "google.golang.org/grpc") || strings.HasPrefix(dep, "github.com/hashicorp/go-plugin") {
			t.Errorf("package egress depends on %s", dep)
		}
	}
}
