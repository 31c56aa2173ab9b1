package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	botbottle "github.com/bot-bottle/bot-bottle"
	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// SourceBuiltin is Agent.Source for an agent embedded in the binary.
const SourceBuiltin = "built-in"

// DefaultWorkdir is Agent.Workdir when agent.hcl does not set one.
const DefaultWorkdir = "/workspace"

// Agent is a resolved agent definition.
type Agent struct {
	Name           string
	Description    string
	Dockerfile     string   // absolute host path, or "" when Image is set
	ContextDir     string   // absolute dir containing the Dockerfile (build context)
	Image          string   // image reference, or "" when Dockerfile is set
	Command        []string // never empty
	ResumeCommand  []string // Command when agent.hcl does not set it
	Workdir        string   // absolute path inside the bottle
	Env            []string // names of host variables passed through at launch
	TranscriptPath string   // absolute path inside the bottle, or ""
	Egress         []string // host[:port]; host may be "*.suffix"; lower-case
	CapAdd         []string // Linux capabilities to add back, upper-case, without "CAP_"
	User           string   // user to run as inside the bottle, or ""
	// Credentials are the credential blocks; their hosts are in Egress.
	Credentials []Credential
	Source      string // SourceBuiltin or the agent.hcl path
}

// SDK returns the definition as the plugin SDK carries it to a backend.
func (a *Agent) SDK() sdk.Agent {
	return sdk.Agent{
		Name:           a.Name,
		Description:    a.Description,
		Dockerfile:     a.Dockerfile,
		ContextDir:     a.ContextDir,
		Image:          a.Image,
		Command:        append([]string(nil), a.Command...),
		ResumeCommand:  append([]string(nil), a.ResumeCommand...),
		Workdir:        a.Workdir,
		EnvNames:       append([]string(nil), a.Env...),
		TranscriptPath: a.TranscriptPath,
		Egress:         append([]string(nil), a.Egress...),
		CapAdd:         append([]string(nil), a.CapAdd...),
		User:           a.User,
	}
}

// LoadAgent loads the agent called name. $home/agents/<name>/agent.hcl
// overrides a built-in of the same name. A built-in is first extracted to
// $home/cache/agents/<name>-<hash>/ so its Dockerfile has a real build
// context on disk.
func LoadAgent(home, name string) (*Agent, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	l, err := newLoader(home)
	if err != nil {
		return nil, err
	}
	return l.load(name)
}

// ListAgents returns every agent, built-in and user, sorted by name; a user
// agent hides the built-in of the same name. An agent that does not load (bad
// HCL, a directory with an invalid name, ...) is left out of the list, and the
// returned error joins one error per such agent, so a caller can show the good
// ones and still report the broken ones.
func ListAgents(home string) ([]Agent, error) {
	l, err := newLoader(home)
	if err != nil {
		return nil, err
	}
	return l.list()
}

func (l *loader) list() ([]Agent, error) {
	names, errs := l.names()
	var agents []Agent
	for _, n := range names {
		a, err := l.load(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("agent %s: %w", n, err))
			continue
		}
		agents = append(agents, *a)
	}
	return agents, errors.Join(errs...)
}

// loader finds agents in a home directory and in a built-in file system. The
// built-ins are a field so tests need not depend on the real ones.
type loader struct {
	home    string // absolute
	builtin fs.FS  // <name>/agent.hcl and the rest of each agent's files
}

func newLoader(home string) (*loader, error) {
	if home == "" {
		return nil, fmt.Errorf("bot-bottle home directory is not set")
	}
	abs, err := filepath.Abs(home)
	if err != nil {
		return nil, fmt.Errorf("resolve home %s: %w", home, err)
	}
	sub, err := fs.Sub(botbottle.BuiltinAgents, "agents")
	if err != nil {
		return nil, fmt.Errorf("built-in agents: %w", err)
	}
	return &loader{home: abs, builtin: sub}, nil
}

func (l *loader) userDir() string { return filepath.Join(l.home, "agents") }

func (l *loader) load(name string) (*Agent, error) {
	if err := ValidName(name); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	userFile := filepath.Join(l.userDir(), name, "agent.hcl")
	src, err := os.ReadFile(userFile)
	switch {
	case err == nil:
		return parseAgent(src, userFile, filepath.Dir(userFile), name, userFile)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("read agent %s: %w", name, err)
	}

	if l.isBuiltin(name) {
		dir, err := l.extract(name)
		if err != nil {
			return nil, err
		}
		src, err := os.ReadFile(filepath.Join(dir, "agent.hcl"))
		if err != nil {
			return nil, fmt.Errorf("read built-in agent %s: %w", name, err)
		}
		return parseAgent(src, builtinFileName(name), dir, name, SourceBuiltin)
	}

	known, _ := l.names()
	list := strings.Join(known, ", ")
	if list == "" {
		list = "none"
	}
	return nil, fmt.Errorf("unknown agent %q (known: %s)", name, list)
}

// builtinFileName names a built-in's agent.hcl in error messages: its path in
// the source tree, which is where a fix would go.
func builtinFileName(name string) string {
	return "(built-in) agents/" + name + "/agent.hcl"
}

func (l *loader) isBuiltin(name string) bool {
	fi, err := fs.Stat(l.builtin, path.Join(name, "agent.hcl"))
	return err == nil && fi.Mode().IsRegular()
}

// names lists the agents that exist, sorted and without duplicates, and one
// error for each user directory that cannot be an agent because of its name.
// A directory without agent.hcl is not an agent and is passed over quietly.
func (l *loader) names() ([]string, []error) {
	set := map[string]bool{}
	if entries, err := fs.ReadDir(l.builtin, "."); err == nil {
		for _, e := range entries {
			if e.IsDir() && ValidName(e.Name()) == nil && l.isBuiltin(e.Name()) {
				set[e.Name()] = true
			}
		}
	}
	var errs []error
	entries, err := os.ReadDir(l.userDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("read user agents: %w", err))
	}
	for _, e := range entries {
		fi, err := os.Stat(filepath.Join(l.userDir(), e.Name(), "agent.hcl"))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if err := ValidName(e.Name()); err != nil {
			errs = append(errs, fmt.Errorf("%s: not usable as an agent: %w", filepath.Join(l.userDir(), e.Name()), err))
			continue
		}
		set[e.Name()] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, errs
}

var agentSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "description"},
		{Name: "dockerfile"},
		{Name: "image"},
		{Name: "command", Required: true},
		{Name: "resume_command"},
		{Name: "workdir"},
		{Name: "env"},
		{Name: "transcript_path"},
		{Name: "egress"},
		{Name: "cap_add"},
		{Name: "user"},
	},
	Blocks: []hcl.BlockHeaderSchema{{Type: "credential", LabelNames: []string{"name"}}},
}

var (
	envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hostRE    = regexp.MustCompile(`^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
	userRE    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)
	imageRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:@-]*$`)
)

// parseAgent parses an agent.hcl. filename names it in errors, dir is where
// a relative dockerfile is resolved, source goes to Agent.Source. A built-in
// (source == SourceBuiltin) may only name a Dockerfile inside its own files.
func parseAgent(src []byte, filename, dir, name, source string) (*Agent, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, DiagError(diags)
	}
	content, diags := file.Body.Content(agentSchema)
	if diags.HasErrors() {
		return nil, DiagError(diags)
	}
	attrs := content.Attributes
	a := &Agent{Name: name, Source: source, Workdir: DefaultWorkdir}
	d := &decoder{}

	a.Description = d.str(attrs["description"])

	dfAttr, imgAttr := attrs["dockerfile"], attrs["image"]
	switch {
	case dfAttr != nil && imgAttr != nil:
		d.add(errorAt(imgAttr.NameRange, "Conflicting image source",
			fmt.Sprintf("set either dockerfile (at line %d) or image, not both", dfAttr.NameRange.Start.Line)))
	case dfAttr == nil && imgAttr == nil:
		d.add(errorAt(file.Body.MissingItemRange(), "Missing image source",
			`set dockerfile = "Dockerfile" (relative to agent.hcl) or image = "<reference>"`))
	case dfAttr != nil:
		a.Dockerfile, a.ContextDir = d.dockerfile(dfAttr, dir, source == SourceBuiltin)
	default:
		a.Image = d.str(imgAttr)
		if !d.failed(imgAttr) && !imageRE.MatchString(a.Image) {
			d.add(errorAt(imgAttr.Expr.Range(), "Invalid image reference", fmt.Sprintf("%q is not an image reference", a.Image)))
		}
	}

	a.Command = d.command(attrs["command"])
	a.ResumeCommand = a.Command
	if attr := attrs["resume_command"]; attr != nil {
		a.ResumeCommand = d.command(attr)
	}
	if attr := attrs["workdir"]; attr != nil {
		a.Workdir = d.guestPath(attr)
	}
	if attr := attrs["transcript_path"]; attr != nil {
		a.TranscriptPath = d.guestPath(attr)
	}
	a.Env = d.list(attrs["env"], func(s string) (string, string) {
		if !envNameRE.MatchString(s) {
			return "", fmt.Sprintf("%q is not an environment variable name", s)
		}
		return s, ""
	})
	a.Egress = d.list(attrs["egress"], checkEgress)
	a.CapAdd = d.list(attrs["cap_add"], checkCapability)
	if attr := attrs["user"]; attr != nil {
		a.User = d.str(attr)
		if !d.failed(attr) && !userRE.MatchString(a.User) {
			d.add(errorAt(attr.Expr.Range(), "Invalid user", fmt.Sprintf("%q is not a user name or uid, optionally with :group", a.User)))
		}
	}
	a.Credentials = d.credentials(content.Blocks)
	a.Egress = addCredentialHosts(a.Egress, a.Credentials)
	if err := DiagError(d.diags); err != nil {
		return nil, err
	}
	return a, nil
}

// decoder collects diagnostics while decoding attributes, so one pass reports
// every mistake in a file rather than the first.
type decoder struct {
	diags hcl.Diagnostics
	bad   map[*hcl.Attribute]bool
}

func (d *decoder) add(diag *hcl.Diagnostic) { d.diags = append(d.diags, diag) }

func (d *decoder) fail(attr *hcl.Attribute, diags hcl.Diagnostics) {
	d.diags = append(d.diags, diags...)
	if d.bad == nil {
		d.bad = map[*hcl.Attribute]bool{}
	}
	d.bad[attr] = true
}

func (d *decoder) failed(attr *hcl.Attribute) bool { return d.bad[attr] }

func (d *decoder) str(attr *hcl.Attribute) string {
	if attr == nil {
		return ""
	}
	var s string
	if diags := decodeExpr(attr.Expr, &s); diags.HasErrors() {
		d.fail(attr, diags)
		return ""
	}
	return s
}

// strings decodes a list of strings with the range of each element, so a
// bad element can be pointed at exactly.
func (d *decoder) strings(attr *hcl.Attribute) ([]string, []hcl.Range) {
	if attr == nil {
		return nil, nil
	}
	var ss []string
	if diags := decodeExpr(attr.Expr, &ss); diags.HasErrors() {
		d.fail(attr, diags)
		return nil, nil
	}
	ranges := make([]hcl.Range, len(ss))
	exprs, diags := hcl.ExprList(attr.Expr)
	for i := range ranges {
		ranges[i] = attr.Expr.Range()
		if !diags.HasErrors() && len(exprs) == len(ss) {
			ranges[i] = exprs[i].Range()
		}
	}
	return ss, ranges
}

// list decodes a list of strings and checks each element; check returns the
// normalised element, or a reason it is wrong.
func (d *decoder) list(attr *hcl.Attribute, check func(string) (string, string)) []string {
	ss, ranges := d.strings(attr)
	out := make([]string, 0, len(ss))
	for i, s := range ss {
		v, why := check(s)
		if why != "" {
			d.add(errorAt(ranges[i], fmt.Sprintf("Invalid %s entry", attr.Name), why))
			continue
		}
		out = append(out, v)
	}
	if attr == nil {
		return nil
	}
	return out
}

func (d *decoder) command(attr *hcl.Attribute) []string {
	ss, _ := d.strings(attr)
	if attr != nil && !d.failed(attr) && (len(ss) == 0 || ss[0] == "") {
		d.add(errorAt(attr.Expr.Range(), "Empty "+attr.Name, "give the program to run and its arguments, e.g. [\"bash\", \"-l\"]"))
	}
	return ss
}

func (d *decoder) guestPath(attr *hcl.Attribute) string {
	s := d.str(attr)
	if !d.failed(attr) && !path.IsAbs(s) {
		d.add(errorAt(attr.Expr.Range(), "Invalid "+attr.Name, fmt.Sprintf("%q must be an absolute path inside the bottle", s)))
		return ""
	}
	return path.Clean(s)
}

// dockerfile resolves the dockerfile attribute against dir and checks that it
// is a file. A built-in's must stay inside its own extracted files.
func (d *decoder) dockerfile(attr *hcl.Attribute, dir string, builtin bool) (file, context string) {
	s := d.str(attr)
	if d.failed(attr) {
		return "", ""
	}
	rng := attr.Expr.Range()
	if s == "" {
		d.add(errorAt(rng, "Empty dockerfile", "name the Dockerfile, relative to agent.hcl"))
		return "", ""
	}
	if builtin && !filepath.IsLocal(s) {
		d.add(errorAt(rng, "Invalid dockerfile", "a built-in agent's Dockerfile must be inside its own directory"))
		return "", ""
	}
	file = s
	if !filepath.IsAbs(file) {
		file = filepath.Join(dir, file)
	}
	file = filepath.Clean(file)
	fi, err := os.Stat(file)
	switch {
	case err != nil:
		d.add(errorAt(rng, "Dockerfile not found", err.Error()))
		return "", ""
	case !fi.Mode().IsRegular():
		d.add(errorAt(rng, "Invalid dockerfile", file+" is not a regular file"))
		return "", ""
	}
	return file, filepath.Dir(file)
}

// checkEgress accepts host[:port] where host is a DNS name (optionally
// "*.suffix"), an IPv4 address, or a bracketed IPv6 address. Hosts are
// lower-cased since DNS names are case-insensitive and the egress proxy
// compares strings.
func checkEgress(s string) (string, string) {
	if isRequestRule(s) {
		return checkRequestRule(s)
	}
	bad := fmt.Sprintf("%q is not host[:port] (e.g. \"api.example.com:443\" or \"*.example.com\")", s)
	host, port := strings.ToLower(s), ""
	bracketed := strings.HasPrefix(host, "[")
	switch {
	case bracketed && strings.HasSuffix(host, "]"):
		host = host[1 : len(host)-1]
	case bracketed || strings.Count(host, ":") == 1:
		h, p, err := net.SplitHostPort(host)
		if err != nil {
			return "", bad
		}
		host, port = h, p
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != port {
			return "", fmt.Sprintf("%q: port must be 1-65535", s)
		}
	}
	ip := net.ParseIP(host)
	ipv6 := ip != nil && strings.Contains(host, ":")
	switch {
	case bracketed && !ipv6:
		return "", bad
	case ipv6 && !bracketed:
		return "", fmt.Sprintf("%q: write an IPv6 address as [addr] or [addr]:port", s)
	case ip == nil && !hostRE.MatchString(host):
		return "", bad
	}
	if ipv6 {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	// Agent definitions get shared: a rule that reaches the proxy itself,
	// the host's credentials or a whole public suffix is refused here.
	if _, err := egressrule.CheckRequested(host); err != nil {
		return "", err.Error()
	}
	return host, ""
}

// capabilities are the Linux capability names (capabilities(7)). Only named
// ones can be added: "ALL" would undo the drop-all that bottles rely on.
var capabilities = map[string]bool{
	"AUDIT_CONTROL": true, "AUDIT_READ": true, "AUDIT_WRITE": true, "BLOCK_SUSPEND": true,
	"BPF": true, "CHECKPOINT_RESTORE": true, "CHOWN": true, "DAC_OVERRIDE": true,
	"DAC_READ_SEARCH": true, "FOWNER": true, "FSETID": true, "IPC_LOCK": true,
	"IPC_OWNER": true, "KILL": true, "LEASE": true, "LINUX_IMMUTABLE": true,
	"MAC_ADMIN": true, "MAC_OVERRIDE": true, "MKNOD": true, "NET_ADMIN": true,
	"NET_BIND_SERVICE": true, "NET_BROADCAST": true, "NET_RAW": true, "PERFMON": true,
	"SETFCAP": true, "SETGID": true, "SETPCAP": true, "SETUID": true,
	"SYS_ADMIN": true, "SYS_BOOT": true, "SYS_CHROOT": true, "SYS_MODULE": true,
	"SYS_NICE": true, "SYS_PACCT": true, "SYS_PTRACE": true, "SYS_RAWIO": true,
	"SYS_RESOURCE": true, "SYS_TIME": true, "SYS_TTY_CONFIG": true, "SYSLOG": true,
	"WAKE_ALARM": true,
}

// checkCapability accepts "NET_ADMIN", "CAP_NET_ADMIN" or either in lower
// case, and returns the form every engine accepts: upper case without CAP_.
func checkCapability(s string) (string, string) {
	c := strings.TrimPrefix(strings.ToUpper(s), "CAP_")
	if c == "ALL" {
		return "", `"ALL" is not allowed; name each capability the agent needs`
	}
	if !capabilities[c] {
		return "", fmt.Sprintf("%q is not a Linux capability", s)
	}
	return c, ""
}

// isRequestRule says whether s is a deny rule or one about requests
// ("!host", "GET host/path"): a form whose grammar is egressrule's alone.
func isRequestRule(s string) bool { return strings.ContainsAny(s, "!/ ") }

// checkRequestRule vets a deny rule or a rule about requests with
// egressrule and returns it in canonical form.
func checkRequestRule(s string) (string, string) {
	r, err := egressrule.ParseRule(s)
	if err != nil {
		return "", err.Error()
	}
	if _, err := egressrule.CheckRequested(s); err != nil {
		return "", err.Error()
	}
	return r.String(), ""
}
