// Package supervise triages requests from inside bottles without a human:
// an HCL policy file of ordered rules approves or denies what it recognises
// and leaves everything else pending for the dashboard. Decisions go through
// the same lifecycle calls as `bot-bottle approve` and `deny`, with the rule
// that made them recorded as the decider.
//
// A policy file ($BOT_BOTTLE_HOME/supervise.hcl unless --policy names
// another) is a list of rules; the first that matches a request decides it:
//
//	rule "docs-egress" {
//	  kind     = "egress"            # egress | capability | any (default)
//	  agent    = "shell"             # optional: the bottle's agent
//	  identity = "shell-*"           # optional glob on the bottle identity
//	  host     = "*.example.test"    # egress: glob on the host; with :port, on host:port
//	  action   = "approve"           # approve | deny | ask
//	}
//
//	rule "no-pipe-to-shell" {
//	  kind   = "capability"
//	  change = "*| sh*"              # glob on the RUN line, or the whole requested Dockerfile
//	  # change_regexp = "^apt-get install -y [a-z0-9-]+$"   (instead of change)
//	  action = "deny"
//	  reason = "no piping downloads into a shell"          # required for deny: the agent is told
//	}
//
// In a glob '*' matches any run of characters (dots, slashes and spaces
// too) and '?' one; nothing else is special. So "apt-get install *" also
// matches "apt-get install x && curl … | sh": approve capability changes
// with an anchored change_regexp. A request no rule matches, or one an
// "ask" rule matches, stays pending for a human. Decisions are recorded as
// "policy:<absolute path of the file>#<rule name>".
package supervise

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/bot-bottle/bot-bottle/internal/queue"
)

// Action is what a rule does with a request it matches.
type Action string

const (
	Approve Action = "approve"
	Deny    Action = "deny"
	// Ask leaves the request pending for a human; a rule that says so
	// stops later rules from deciding it.
	Ask Action = "ask"
)

// Kinds a rule can match; KindAny matches both.
const (
	KindAny        = "any"
	KindEgress     = string(queue.KindEgress)
	KindCapability = string(queue.KindCapability)
)

// Rule is one `rule "name" { ... }` block. Empty matchers match anything.
type Rule struct {
	Name     string
	Index    int // 1-based position in the file
	Kind     string
	Agent    string
	Identity *Glob
	Host     *Glob // egress only; without a port in the pattern, any port
	Change   *regexp.Regexp
	// ChangeSource is the pattern as written, for messages.
	ChangeSource string
	Action       Action
	Reason       string
	Range        hcl.Range
}

// Policy is a parsed policy file.
type Policy struct {
	File  string // absolute path, as decisions name it
	Rules []Rule
}

// DecidedBy is how decisions by rule r are recorded: "policy:<file>#<rule>".
func (p *Policy) DecidedBy(r Rule) string {
	return "policy:" + p.File + "#" + r.Name
}

// Load reads and checks a policy file. Every problem is reported as
// file:line:col in a one-line error, before anything can be decided.
func Load(path string) (*Policy, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	src, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	p, err := Parse(src, abs)
	if err != nil {
		return nil, err
	}
	return p, nil
}

var ruleNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

var fileSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: "rule", LabelNames: []string{"name"}}},
}

var ruleSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "kind"}, {Name: "agent"}, {Name: "identity"}, {Name: "host"},
		{Name: "change"}, {Name: "change_regexp"},
		{Name: "action", Required: true}, {Name: "reason"},
	},
}

// Parse parses policy source; filename names it in errors and decisions.
func Parse(src []byte, filename string) (*Policy, error) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	content, diags := f.Body.Content(fileSchema)
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	p := &Policy{File: filename}
	seen := map[string]hcl.Range{}
	for i, b := range content.Blocks {
		r, ds := parseRule(b, i+1)
		diags = append(diags, ds...)
		if ds.HasErrors() {
			continue
		}
		if prev, dup := seen[r.Name]; dup {
			diags = append(diags, errorAt(b.LabelRanges[0], "Duplicate rule name",
				fmt.Sprintf("rule %q is already defined at line %d; decisions name rules, so names must be unique", r.Name, prev.Start.Line)))
			continue
		}
		seen[r.Name] = b.DefRange
		p.Rules = append(p.Rules, r)
	}
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	return p, nil
}

func parseRule(b *hcl.Block, index int) (Rule, hcl.Diagnostics) {
	r := Rule{Name: b.Labels[0], Index: index, Kind: KindAny, Range: b.DefRange}
	var diags hcl.Diagnostics
	if !ruleNameRE.MatchString(r.Name) {
		diags = append(diags, errorAt(b.LabelRanges[0], "Invalid rule name",
			fmt.Sprintf("%q: use letters, digits, '-', '_' and '.', at most 64", r.Name)))
	}
	content, ds := b.Body.Content(ruleSchema)
	diags = append(diags, ds...)
	if ds.HasErrors() {
		return r, diags
	}
	str := func(name string) (string, *hcl.Attribute, bool) {
		a, ok := content.Attributes[name]
		if !ok {
			return "", nil, false
		}
		v, ds := a.Expr.Value(nil)
		if ds.HasErrors() {
			diags = append(diags, ds...)
			return "", a, false
		}
		if v.IsNull() || !v.Type().Equals(cty.String) || !v.IsKnown() {
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid value", name+" must be a string"))
			return "", a, false
		}
		return v.AsString(), a, true
	}

	if s, a, ok := str("kind"); ok {
		switch s {
		case KindAny, KindEgress, KindCapability:
			r.Kind = s
		default:
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid kind",
				fmt.Sprintf("%q: want \"egress\", \"capability\" or \"any\"", s)))
		}
	}
	if s, a, ok := str("action"); ok {
		switch Action(s) {
		case Approve, Deny, Ask:
			r.Action = Action(s)
		default:
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid action",
				fmt.Sprintf("%q: want \"approve\", \"deny\" or \"ask\"", s)))
		}
	}
	if s, _, ok := str("agent"); ok {
		r.Agent = s
	}
	if s, a, ok := str("identity"); ok {
		g, err := CompileGlob(s)
		if err != nil {
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid identity pattern", err.Error()))
		}
		r.Identity = g
	}
	if s, a, ok := str("host"); ok {
		if r.Kind != KindEgress {
			diags = append(diags, errorAt(a.Range, "host needs kind = \"egress\"",
				"only egress requests have a host; set kind = \"egress\" on this rule"))
		}
		g, err := CompileGlob(strings.ToLower(s))
		if err != nil {
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid host pattern", err.Error()))
		}
		r.Host = g
	}
	change, ca, hasChange := str("change")
	changeRE, ra, hasRE := str("change_regexp")
	switch {
	case hasChange && hasRE:
		diags = append(diags, errorAt(ra.Range, "Conflicting change patterns", "use change (a glob) or change_regexp, not both"))
	case hasChange || hasRE:
		a := ca
		if hasRE {
			a = ra
		}
		if r.Kind != KindCapability {
			diags = append(diags, errorAt(a.Range, a.Name+" needs kind = \"capability\"",
				"only capability requests change the image; set kind = \"capability\" on this rule"))
		}
		if hasChange {
			g, err := CompileGlob(change)
			if err != nil {
				diags = append(diags, errorAt(a.Expr.Range(), "Invalid change pattern", err.Error()))
			} else {
				r.Change, r.ChangeSource = g.re, change
			}
		} else {
			re, err := regexp.Compile(changeRE)
			if err != nil {
				diags = append(diags, errorAt(a.Expr.Range(), "Invalid change_regexp", err.Error()))
			} else {
				r.Change, r.ChangeSource = re, changeRE
			}
		}
	}
	if s, a, ok := str("reason"); ok {
		if strings.TrimSpace(s) == "" {
			diags = append(diags, errorAt(a.Expr.Range(), "Empty reason", "the agent is told the reason; say why"))
		}
		r.Reason = s
	}
	if r.Action == Deny && !hasAttr(content, "reason") {
		diags = append(diags, errorAt(b.DefRange, "Missing reason",
			fmt.Sprintf("rule %q denies, so it needs reason = \"...\": the agent is told why", r.Name)))
	}
	return r, diags
}

func hasAttr(c *hcl.BodyContent, name string) bool { _, ok := c.Attributes[name]; return ok }

// Glob is a whole-string pattern where '*' matches any run of characters
// (dots, slashes and spaces included) and '?' exactly one; everything else
// is literal. Hosts, identities and RUN lines all read naturally this way.
type Glob struct {
	src string
	re  *regexp.Regexp
}

// CompileGlob compiles a Glob.
func CompileGlob(s string) (*Glob, error) {
	if s == "" {
		return nil, fmt.Errorf("empty pattern")
	}
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	for _, c := range s {
		switch c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`\z`)
	re, err := regexp.Compile(b.String())
	if err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	return &Glob{src: s, re: re}, nil
}

// Match reports whether s matches the whole pattern.
func (g *Glob) Match(s string) bool { return g.re.MatchString(s) }

func (g *Glob) String() string { return g.src }

// Subject is what rules look at: a request and the agent of its bottle
// ("" when the bottle's state is gone).
type Subject struct {
	Request queue.Request
	Agent   string
}

// Match returns the first rule that matches s, or false when none does.
func (p *Policy) Match(s Subject) (Rule, bool) {
	for _, r := range p.Rules {
		if r.matches(s) {
			return r, true
		}
	}
	return Rule{}, false
}

func (r Rule) matches(s Subject) bool {
	q := s.Request
	if r.Kind != KindAny && r.Kind != string(q.Kind) {
		return false
	}
	if r.Agent != "" && r.Agent != s.Agent {
		return false
	}
	if r.Identity != nil && !r.Identity.Match(q.Identity) {
		return false
	}
	if r.Host != nil && !matchHost(r.Host, q.Host) {
		return false
	}
	if r.Change != nil && !r.Change.MatchString(changeOf(q)) {
		return false
	}
	return true
}

// changeOf is what a change pattern is matched against: the RUN line of a
// RUN request, else the whole requested Dockerfile.
func changeOf(q queue.Request) string {
	if q.Run != "" {
		return q.Run
	}
	return q.Dockerfile
}

// defaultPort is the port of an egress request that names none (the helper
// documents 443).
const defaultPort = "443"

// matchHost matches "host[:port]": a pattern with a port is matched against
// host:port, one without against the host alone, whatever the port.
func matchHost(g *Glob, target string) bool {
	host, port := splitHostPort(strings.ToLower(target))
	if port == "" {
		port = defaultPort
	}
	if _, pport := splitHostPort(g.src); pport != "" {
		return g.Match(host + ":" + port)
	}
	return g.Match(host)
}

func splitHostPort(s string) (host, port string) {
	if strings.HasPrefix(s, "[") {
		if end := strings.IndexByte(s, ']'); end >= 0 {
			host, rest := s[:end+1], s[end+1:]
			if p, ok := strings.CutPrefix(rest, ":"); ok {
				return host, p
			}
			return host, ""
		}
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.Contains(s[:i], ":") {
		return s[:i], s[i+1:]
	}
	return s, ""
}

// diagErr turns error diagnostics into one-line errors, first problem in
// file order.
func diagErr(diags hcl.Diagnostics) error {
	var errs []*hcl.Diagnostic
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Subject, errs[j].Subject
		if a == nil || b == nil {
			return a != nil && b == nil
		}
		return a.Start.Byte < b.Start.Byte
	})
	return &PolicyError{Diagnostics: errs}
}

// PolicyError is a bad policy file. Error() is one line naming the first
// problem as file:line:col and how many more there are.
type PolicyError struct {
	Diagnostics []*hcl.Diagnostic
}

func (e *PolicyError) Error() string {
	d := e.Diagnostics[0]
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	b.WriteString(strings.Join(strings.Fields(d.Summary), " "))
	if d.Detail != "" {
		b.WriteString("; " + strings.Join(strings.Fields(d.Detail), " "))
	}
	switch n := len(e.Diagnostics) - 1; {
	case n == 1:
		b.WriteString(" (and 1 more error)")
	case n > 1:
		fmt.Fprintf(&b, " (and %d more errors)", n)
	}
	return b.String()
}

func errorAt(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}
