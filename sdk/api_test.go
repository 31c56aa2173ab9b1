package sdk

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/sdk/internal/wire"
)

// foreignAPI matches a go-plugin, gRPC or hclog identifier, the core's
// sdk/host or one of this module's internal packages, in a declaration as
// `go doc` prints it.
var foreignAPI = regexp.MustCompile(`\b(plugin|goplugin|grpc|codes|status|hclog|pb|pluginpb|wire|host)\.[A-Z]\w*`)

// foreignDecls returns the declaration lines of `go doc -all` output that
// name a foreign type: prose (the package doc before the first section,
// indented doc comments, // comments) is not API and is skipped.
func foreignDecls(doc string) []string {
	var bad []string
	inDecls := false
	for _, line := range strings.Split(doc, "\n") {
		switch line {
		case "CONSTANTS", "VARIABLES", "FUNCTIONS", "TYPES":
			inDecls = true
			continue
		}
		code := strings.TrimSpace(line)
		if !inDecls || strings.HasPrefix(line, "    ") || strings.HasPrefix(code, "//") {
			continue
		}
		if i := strings.Index(code, "//"); i >= 0 {
			code = code[:i]
		}
		if foreignAPI.MatchString(code) {
			bad = append(bad, line)
		}
	}
	return bad
}

// TestAuthorAPIHasNoForeignTypes is the SDK's stability promise made
// checkable: nothing a plugin author can reach in package sdk (nor in
// sdk/backendtest and sdk/names) names a go-plugin, gRPC or hclog type, or
// the core's sdk/host, so a major version of those is no SDK break.
func TestAuthorAPIHasNoForeignTypes(t *testing.T) {
	for pkg, anchor := range map[string]string{
		".":             "func Serve(impl Backend, opts ...ServeOption)",
		"./backendtest": "func RunConformance(t *testing.T, h Harness)",
		"./names":       "func Valid(s string) bool",
	} {
		out, err := exec.Command("go", "doc", "-all", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go doc %s: %v\n%s", pkg, err, out)
		}
		if !strings.Contains(string(out), anchor) {
			t.Fatalf("go doc %s does not list %q; the check would prove nothing:\n%s", pkg, anchor, out)
		}
		for _, l := range foreignDecls(string(out)) {
			t.Errorf("%s exposes a foreign type: %s", pkg, strings.TrimSpace(l))
		}
	}
}

// The check itself must catch what it is for.
func TestForeignDeclsCatchesForeignTypes(t *testing.T) {
	doc := "package sdk\n\nprose mentions grpc.Server freely\n\nFUNCTIONS\n\n" +
		"func A() *grpc.Server\n    A's doc may say plugin.Serve.\n\n" +
		"func B(l hclog.Logger)\n\nTYPES\n\ntype C struct {\n\tCode codes.Code // status.Code\n\tOK string // hclog.Logger\n}\n" +
		"func D() *slog.Logger\n"
	got := foreignDecls(doc)
	want := []string{"func A() *grpc.Server", "func B(l hclog.Logger)", "\tCode codes.Code // status.Code"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("foreignDecls = %q, want %q", got, want)
	}
}

func TestProtocolVersionIsTheWireOne(t *testing.T) {
	if ProtocolVersion != wire.ProtocolVersion {
		t.Fatalf("sdk.ProtocolVersion %d, wire %d", ProtocolVersion, wire.ProtocolVersion)
	}
}
