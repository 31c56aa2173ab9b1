package config

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// validatorRE finds an anchored regexp literal with a lower-case name
// character class: the shape of an identity or name validator.
var validatorRE = regexp.MustCompile("regexp\\.MustCompile\\(`\\^[^`]*a-z0-9[^`]*-[^`]*`\\)")

// handRolledRE finds a byte-by-byte version of the same rule.
var handRolledRE = regexp.MustCompile(`>= 'a' && \w+ <= 'z'.*== '-'`)

// notNames are validators of other grammars that happen to look alike.
var notNames = map[string]string{
	"internal/config/agents.go hostRE":                          "DNS host names of egress rules",
	"internal/queue/parse.go labelRE":                           "one label of a requested host name",
	"plugins/smolmachines/internal/backend/plan.go hostRE":      "host names for smolvm --allow-host",
	"internal/config/agents.go userRE":                          "a container user[:group]",
	"internal/config/agents.go imageRE":                         "an image reference",
	"internal/supervise/policy.go ruleNameRE":                   "a policy rule's label, free-form by design",
	"sdk/egressrule/rules.go hand-rolled":                       "one label of an egress rule's host name",
	"plugins/smolmachines/internal/smolvm/contract.go SourceRE": "a smolvm source location (file.rs:line) in the contract table",
	"plugins/kubernetes/internal/kube/config.go repoRE":         "an image repository (registry[:port]/path) to push agent images to",
}

// TestOneNameRule keeps sdk/names (sdk.ValidName) the only identity and name rule of the
// tree: any other anchored validator with a lower-case name class, or a
// hand-rolled byte loop of one, fails here unless it is listed in notNames
// with the grammar it checks instead. Tests are exempt: they extract
// identities from output, they do not validate them.
func TestOneNameRule(t *testing.T) {
	root := repoRoot(t)
	seen := map[string]bool{}
	checked := 0
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "testdata" || name == "bin" {
				return filepath.SkipDir
			}
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") || strings.HasSuffix(p, ".pb.go") || rel == filepath.Join("sdk", "names", "names.go") {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		checked++
		for i, line := range bytes.Split(data, []byte("\n")) {
			l := string(line)
			if validatorRE.MatchString(l) {
				name := strings.Fields(strings.TrimPrefix(strings.TrimSpace(l), "var "))[0]
				key := rel + " " + name
				if _, ok := notNames[key]; ok {
					seen[key] = true
					continue
				}
				t.Errorf("%s:%d: a name validator of its own (%s); use sdk.ValidName / sdk.ValidIdentity, or list it in notNames with the grammar it checks", rel, i+1, strings.TrimSpace(l))
			}
			if handRolledRE.MatchString(l) {
				if key := rel + " hand-rolled"; notNames[key] != "" {
					seen[key] = true
					continue
				}
				t.Errorf("%s:%d: a hand-rolled name check; use sdk.ValidName / sdk.ValidIdentity", rel, i+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 100 {
		t.Fatalf("only %d Go files under %s; the walk did not see the tree", checked, root)
	}
	for k := range notNames {
		if !seen[k] {
			t.Errorf("notNames lists %q, which no longer exists; remove it", k)
		}
	}
}

func TestOneNameRuleCatchesValidators(t *testing.T) {
	for _, l := range []string{
		"var identityRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)",
		"\tnameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)",
	} {
		if !validatorRE.MatchString(l) {
			t.Errorf("validatorRE misses %q", l)
		}
	}
	if !handRolledRE.MatchString("if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {") {
		t.Error("handRolledRE misses a byte loop")
	}
	if validatorRE.MatchString("var startedRE = regexp.MustCompile(`bot-bottle: starting ([a-z0-9-]+)`)") {
		t.Error("validatorRE flags an unanchored extractor")
	}
}

// repoRoot is the directory of the repository's root go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module github.com/bot-bottle/bot-bottle\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no repository root above the test's directory")
		}
		dir = parent
	}
}
