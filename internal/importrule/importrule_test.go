package importrule

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	module       = "github.com/bot-bottle/bot-bottle"
	coreInternal = module + "/internal/"
)

// violation is a package under plugins/ whose non-test build needs the
// core's internal code: directly (Imports) or through something else it
// imports (Deps).
type violation struct {
	pkg      string
	imports  []string // of the core's internal, by the package itself
	reaching []string // of the core's internal, through its dependencies
}

func (v violation) String() string {
	if len(v.imports) > 0 {
		return fmt.Sprintf("%s imports %s", v.pkg, strings.Join(v.imports, ", "))
	}
	return fmt.Sprintf("%s depends on %s", v.pkg, strings.Join(v.reaching, ", "))
}

// check lists the packages matching pattern in the module at dir, as the
// go command builds them without tests, and returns those that reach the
// core's internal/.
func check(t *testing.T, dir, pattern string) []violation {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,Deps,Error", pattern)
	cmd.Dir = dir
	// The fixture module has no dependencies and no go.sum to read.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=readonly")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list in %s: %v\n%s", dir, err, stderr.String())
	}
	var found []violation
	dec := json.NewDecoder(bytes.NewReader(out))
	for n := 0; ; n++ {
		var p struct {
			ImportPath    string
			Imports, Deps []string
			Error         *struct{ Err string }
		}
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			if n == 0 {
				t.Fatalf("go list %s in %s found no packages", pattern, dir)
			}
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Error != nil {
			t.Fatalf("go list %s: %s", p.ImportPath, p.Error.Err)
		}
		internal := func(s string) bool { return strings.HasPrefix(s, coreInternal) }
		v := violation{pkg: p.ImportPath}
		for _, imp := range p.Imports {
			if internal(imp) {
				v.imports = append(v.imports, imp)
			}
		}
		for _, d := range p.Deps {
			if internal(d) {
				v.reaching = append(v.reaching, d)
			}
		}
		if len(v.reaching) > 0 {
			found = append(found, v)
		}
	}
	return found
}

// TestPluginsImportNoCoreInternal is the rule on the tree itself. Tests
// under plugins/ may use the core's test infrastructure (internal/testenv):
// it is not in the binaries.
func TestPluginsImportNoCoreInternal(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range check(t, root, "./plugins/...") {
		t.Errorf("%s: backends build on the SDK and plugins/internal, never on the core's internal/", v)
	}
	// A backend in a module of its own (client-go's weight kept out of the
	// core's build) is held to the same rule.
	for _, v := range check(t, filepath.Join(root, "plugins", "kubernetes"), "./...") {
		t.Errorf("%s: backends build on the SDK, never on the core's internal/", v)
	}
}

// TestTheRuleCatches runs the same check on a module laid out like this one
// in which plugins break the rule: directly, through plugins/internal, and
// (allowed) in a test only.
func TestTheRuleCatches(t *testing.T) {
	var got []string
	for _, v := range check(t, filepath.Join("testdata", "fixture"), "./plugins/...") {
		got = append(got, v.String())
	}
	want := []string{
		module + "/plugins/bad imports " + module + "/internal/core",
		module + "/plugins/indirect depends on " + module + "/internal/core",
		module + "/plugins/internal/shared imports " + module + "/internal/core",
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("violations found:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
