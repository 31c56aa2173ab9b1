package config

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/bot-bottle/bot-bottle/sdk"
	"github.com/bot-bottle/bot-bottle/sdk/egressrule"
)

// Credential is one `credential "NAME" { ... }` block of an agent.hcl: how
// a secret goes on the wire for the agent, and where the core reads its
// value on the host at every start and resume. The agent only ever sees a
// placeholder in EnvName; the egress proxy puts the value in Header
// (Prefix+value) on requests to Hosts.
type Credential struct {
	Name    string
	EnvName string
	// Hosts are egressrule host[:port] patterns (port 443 when none); each
	// is also in the agent's Egress (parseAgent adds the missing ones).
	Hosts  []string
	Header string
	Prefix string
	// Exactly one source is set.
	FromEnv     string   // a variable of the core's environment
	FromFile    string   // an absolute host path ("~/" is the operator's home)
	JSONKey     string   // with FromFile: a dotted key path into a JSON file
	FromCommand []string // argv; its stdout, trimmed
	// Agents are, for a credential of plugins.hcl, the agents it is given
	// to (none: every agent). Always empty in an agent.hcl.
	Agents []string
}

// Source says where the value comes from, for the preflight and errors;
// never the value.
func (c Credential) Source() string {
	switch {
	case c.FromEnv != "":
		return "$" + c.FromEnv
	case c.FromFile != "" && c.JSONKey != "":
		return c.FromFile + " (" + c.JSONKey + ")"
	case c.FromFile != "":
		return c.FromFile
	default:
		return "command " + c.FromCommand[0]
	}
}

// SDK is the credential as a backend gets it, with this launch's
// placeholder.
func (c Credential) SDK(placeholder string) sdk.Credential {
	return sdk.Credential{Name: c.Name, EnvName: c.EnvName, Hosts: append([]string(nil), c.Hosts...),
		Header: c.Header, Prefix: c.Prefix, Placeholder: placeholder}
}

// Bounds on reading a value: a credential is a token, not a document.
const (
	maxCredentialFile   = 1 << 20
	credentialCmdTimout = 10 * time.Second
)

// ErrCredentialUnset is what Resolve returns for a from_env credential
// whose variable is not set: the agent starts without it (as with env).
var ErrCredentialUnset = errors.New("not set")

// Resolve reads the credential's value on the host. getenv looks up
// variables (nil: the process's). An error never contains the value.
func (c Credential) Resolve(ctx context.Context, getenv func(string) (string, bool)) (string, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	v, err := c.read(ctx, getenv)
	if err != nil {
		return "", fmt.Errorf("credential %s from %s: %w", c.Name, c.Source(), err)
	}
	// A file or a command's output ends with a line break that is no part
	// of the value.
	v = strings.TrimSpace(v)
	if v == "" {
		return "", fmt.Errorf("credential %s from %s: the value is empty", c.Name, c.Source())
	}
	if err := sdk.CheckCredentialValue(v); err != nil {
		return "", fmt.Errorf("credential %s from %s: %w", c.Name, c.Source(), err)
	}
	return v, nil
}

func (c Credential) read(ctx context.Context, getenv func(string) (string, bool)) (string, error) {
	switch {
	case c.FromEnv != "":
		v, ok := getenv(c.FromEnv)
		if !ok {
			return "", ErrCredentialUnset
		}
		return v, nil
	case c.FromFile != "":
		path, err := expandHome(c.FromFile, getenv)
		if err != nil {
			return "", err
		}
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxCredentialFile+1))
		if err != nil {
			return "", err
		}
		if len(b) > maxCredentialFile {
			return "", fmt.Errorf("larger than %d bytes", maxCredentialFile)
		}
		if c.JSONKey == "" {
			return string(b), nil
		}
		return jsonKey(b, c.JSONKey)
	default:
		cctx, cancel := context.WithTimeout(ctx, credentialCmdTimout)
		defer cancel()
		cmd := exec.CommandContext(cctx, c.FromCommand[0], c.FromCommand[1:]...)
		var out limitedBuffer
		out.max = sdk.MaxCredentialValue + 1
		cmd.Stdout = &out
		// Its stderr may hold anything, the value included: it is dropped.
		cmd.Stderr = io.Discard
		cmd.WaitDelay = time.Second
		err := cmd.Run()
		switch {
		case cctx.Err() != nil && ctx.Err() == nil:
			return "", fmt.Errorf("did not finish in %s", credentialCmdTimout)
		case err != nil:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("exited with status %d", ee.ExitCode())
			}
			return "", err
		case out.over:
			return "", fmt.Errorf("printed more than %d bytes", sdk.MaxCredentialValue)
		}
		return out.String(), nil
	}
}

// expandHome resolves "~/..." against the operator's HOME.
func expandHome(p string, getenv func(string) (string, bool)) (string, error) {
	rest, ok := strings.CutPrefix(p, "~/")
	if !ok {
		return p, nil
	}
	home, _ := getenv("HOME")
	if home == "" {
		return "", errors.New("HOME is not set")
	}
	return filepath.Join(home, rest), nil
}

// jsonKey walks a dotted key path ("claudeAiOauth.accessToken") into a JSON
// document and returns the string there. Errors name the path, never a
// value.
func jsonKey(b []byte, path string) (string, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return "", errors.New("not a JSON document")
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return "", fmt.Errorf("no key %q: not an object there", k)
		}
		if v, ok = m[k]; !ok {
			return "", fmt.Errorf("no key %q", k)
		}
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("%s is not a string", path)
	}
	return s, nil
}

// limitedBuffer keeps at most max bytes and notes whether more came.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); len(p) > room {
		b.over = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

var credentialSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "env", Required: true},
		{Name: "hosts", Required: true},
		{Name: "header", Required: true},
		{Name: "prefix"},
		{Name: "from_env"},
		{Name: "from_file"},
		{Name: "json"},
		{Name: "from_command"},
	},
}

var (
	// An HTTP header name is a token (RFC 9110 5.1).
	headerRE   = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	jsonPathRE = regexp.MustCompile(`^[^.]+(\.[^.]+)*$`)
)

// credentials decodes the credential blocks, reporting every mistake.
func (d *decoder) credentials(blocks hcl.Blocks) []Credential {
	return d.credentialBlocks(blocks, credentialSchema)
}

// operatorCredentialSchema is plugins.hcl's credential block: an agent's,
// and which agents get it.
var operatorCredentialSchema = &hcl.BodySchema{
	Attributes: append([]hcl.AttributeSchema{{Name: "agents"}}, credentialSchema.Attributes...),
}

// operatorCredentials decodes plugins.hcl's credential blocks.
func (d *decoder) operatorCredentials(blocks hcl.Blocks) []Credential {
	return d.credentialBlocks(blocks, operatorCredentialSchema)
}

func (d *decoder) credentialBlocks(blocks hcl.Blocks, schema *hcl.BodySchema) []Credential {
	var out []Credential
	names := map[string]hcl.Range{}
	envs := map[string]string{}
	for _, b := range blocks {
		c := Credential{Name: b.Labels[0]}
		if err := sdk.ValidCredentialName(c.Name); err != nil {
			d.add(errorAt(b.LabelRanges[0], "Invalid credential name", err.Error()))
			continue
		}
		if prev, dup := names[c.Name]; dup {
			d.add(errorAt(b.LabelRanges[0], "Duplicate credential",
				fmt.Sprintf("credential %q is already defined at line %d", c.Name, prev.Start.Line)))
			continue
		}
		names[c.Name] = b.DefRange
		content, diags := b.Body.Content(schema)
		if diags.HasErrors() {
			d.diags = append(d.diags, diags...)
			continue
		}
		attrs := content.Attributes
		if attr := attrs["env"]; attr != nil {
			c.EnvName = d.str(attr)
			switch {
			case d.failed(attr):
			case !envNameRE.MatchString(c.EnvName):
				d.add(errorAt(attr.Expr.Range(), "Invalid credential env", fmt.Sprintf("%q is not an environment variable name", c.EnvName)))
			case strings.HasPrefix(c.EnvName, "BOT_BOTTLE_"):
				d.add(errorAt(attr.Expr.Range(), "Invalid credential env", "BOT_BOTTLE_* variables are the bottle's own"))
			case envs[c.EnvName] != "":
				d.add(errorAt(attr.Expr.Range(), "Invalid credential env", fmt.Sprintf("%s already carries credential %q", c.EnvName, envs[c.EnvName])))
			default:
				envs[c.EnvName] = c.Name
			}
		}
		if attr := attrs["hosts"]; attr != nil {
			before := len(d.diags)
			c.Hosts = d.list(attr, checkEgress)
			if !d.failed(attr) && len(d.diags) == before && len(c.Hosts) == 0 {
				d.add(errorAt(attr.Expr.Range(), "Empty credential hosts", "name the hosts the credential may go to, e.g. [\"api.example.com\"]"))
			}
		}
		if attr := attrs["header"]; attr != nil {
			c.Header = d.str(attr)
			if !d.failed(attr) && !headerRE.MatchString(c.Header) {
				d.add(errorAt(attr.Expr.Range(), "Invalid credential header", fmt.Sprintf("%q is not an HTTP header name", c.Header)))
			}
		}
		if attr := attrs["prefix"]; attr != nil {
			c.Prefix = d.str(attr)
			if !d.failed(attr) && (len(c.Prefix) > 64 || strings.IndexFunc(c.Prefix, func(r rune) bool { return r < ' ' || r > '~' }) >= 0) {
				d.add(errorAt(attr.Expr.Range(), "Invalid credential prefix", "a prefix is at most 64 printable ASCII characters, e.g. \"Bearer \""))
			}
		}
		var sources []*hcl.Attribute
		for _, k := range []string{"from_env", "from_file", "from_command"} {
			if attrs[k] != nil {
				sources = append(sources, attrs[k])
			}
		}
		switch len(sources) {
		case 0:
			d.add(errorAt(b.Body.MissingItemRange(), "Missing credential source",
				`say where the value is on the host: from_env = "VAR", from_file = "/path" (json = "key.path" for a JSON file) or from_command = ["cmd", "arg"]`))
		case 1:
		default:
			d.add(errorAt(sources[1].NameRange, "Conflicting credential sources",
				fmt.Sprintf("set one of from_env, from_file and from_command (%s is at line %d)", sources[0].Name, sources[0].NameRange.Start.Line)))
		}
		if attr := attrs["from_env"]; attr != nil {
			c.FromEnv = d.str(attr)
			if !d.failed(attr) && !envNameRE.MatchString(c.FromEnv) {
				d.add(errorAt(attr.Expr.Range(), "Invalid from_env", fmt.Sprintf("%q is not an environment variable name", c.FromEnv)))
			}
		}
		if attr := attrs["from_file"]; attr != nil {
			c.FromFile = d.str(attr)
			if !d.failed(attr) && !filepath.IsAbs(c.FromFile) && !strings.HasPrefix(c.FromFile, "~/") {
				d.add(errorAt(attr.Expr.Range(), "Invalid from_file", fmt.Sprintf("%q: give an absolute path or one starting with ~/", c.FromFile)))
			}
		}
		if attr := attrs["json"]; attr != nil {
			c.JSONKey = d.str(attr)
			switch {
			case d.failed(attr):
			case attrs["from_file"] == nil:
				d.add(errorAt(attr.NameRange, "Misplaced json", "json is a key path into the file of from_file"))
			case !jsonPathRE.MatchString(c.JSONKey):
				d.add(errorAt(attr.Expr.Range(), "Invalid json", fmt.Sprintf("%q is not a dotted key path, e.g. \"claudeAiOauth.accessToken\"", c.JSONKey)))
			}
		}
		if attr := attrs["from_command"]; attr != nil {
			c.FromCommand = d.command(attr)
		}
		if attr := attrs["agents"]; attr != nil {
			c.Agents = d.list(attr, func(s string) (string, string) {
				if err := ValidName(s); err != nil {
					return "", err.Error()
				}
				return s, ""
			})
		}
		out = append(out, c)
	}
	return out
}

// addCredentialHosts puts each credential host the egress list lacks at its
// end: a credential is only of use where the agent may connect, and its
// author has named the host already. Compared in egressrule's canonical form.
func addCredentialHosts(egress []string, creds []Credential) []string {
	have := map[string]bool{}
	canon := func(s string) string {
		if r, err := egressrule.ParseRule(s); err == nil {
			return r.String()
		}
		return s
	}
	for _, e := range egress {
		have[canon(e)] = true
	}
	for _, c := range creds {
		for _, h := range c.Hosts {
			if k := canon(h); !have[k] {
				have[k] = true
				egress = append(egress, h)
			}
		}
	}
	return egress
}

// ApplyCredentials gives agent a the operator's credentials of plugins.hcl
// that name it (or name no agent): one of the same name replaces the
// agent's own (the operator decides where a value comes from), and their
// hosts join its egress. A variable two credentials would fill is an
// error naming both.
func (p *Plugins) ApplyCredentials(a *Agent) error {
	if p == nil || len(p.Credentials) == 0 {
		return nil
	}
	creds := append([]Credential(nil), a.Credentials...)
	for _, oc := range p.Credentials {
		if len(oc.Agents) > 0 && !slices.Contains(oc.Agents, a.Name) {
			continue
		}
		oc.Agents = nil
		if i := slices.IndexFunc(creds, func(c Credential) bool { return c.Name == oc.Name }); i >= 0 {
			creds[i] = oc
		} else {
			creds = append(creds, oc)
		}
	}
	envs := map[string]string{}
	for _, c := range creds {
		if other, dup := envs[c.EnvName]; dup {
			return fmt.Errorf("agent %s: credentials %s and %s (%s) both fill %s", a.Name, other, c.Name, p.File, c.EnvName)
		}
		envs[c.EnvName] = c.Name
	}
	a.Credentials = creds
	a.Egress = addCredentialHosts(a.Egress, creds)
	return nil
}
