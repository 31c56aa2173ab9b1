package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"

	botbottle "github.com/bot-bottle/bot-bottle"
)

// BuiltinPluginsFile is Plugins.File when no user plugins.hcl exists; it is
// also the file name in error messages about the embedded default.
const BuiltinPluginsFile = "(built-in plugins.hcl)"

// DefaultBackend is the backend used when nothing else names one.
const DefaultBackend = "docker"

// Plugins is a parsed plugins.hcl.
type Plugins struct {
	DefaultBackend string                 // "" if not set in the file
	Plugins        map[string]PluginBlock // by name
	File           string                 // path of the file read, or BuiltinPluginsFile
	// Credentials are the operator's credential blocks (see
	// ApplyCredentials), for agents of their own choosing.
	Credentials []Credential
}

// PluginBlock is one `plugin "name" { ... }` block.
type PluginBlock struct {
	Name   string
	Path   string          // "" when unset; a relative path is resolved against the file's directory
	SHA256 string          // lower-case hex, or ""
	Config json.RawMessage // the config { } block's attributes as a JSON object; {} when absent
	Range  hcl.Range       // where the block is declared, for error messages
	// ConfigKeys are where each config attribute is, so that a plugin's
	// complaint about one can name its file:line (see Locate).
	ConfigKeys map[string]hcl.Range
}

// LoadPlugins reads $home/plugins.hcl if it exists, else the embedded default.
// A user file replaces the default whole; the two are never merged, so what
// the user reads in their file is all there is.
//
// Relative plugin paths in the embedded default are resolved against home.
func LoadPlugins(home string) (*Plugins, error) {
	base, err := absOrEmpty(home)
	if err != nil {
		return nil, err
	}
	if home != "" {
		path := filepath.Join(home, "plugins.hcl")
		src, err := os.ReadFile(path)
		switch {
		case err == nil:
			return parsePlugins(src, path, base)
		case errors.Is(err, fs.ErrNotExist):
			// fall through to the built-in default
		default:
			return nil, fmt.Errorf("read plugins configuration: %w", err)
		}
	}
	return parsePlugins(botbottle.DefaultPluginsHCL, BuiltinPluginsFile, base)
}

func absOrEmpty(dir string) (string, error) {
	if dir == "" {
		return "", nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", dir, err)
	}
	return abs, nil
}

// Block returns the named plugin's block, or a zero block (with Config "{}")
// when the file has none, so a caller can always hand Config to a plugin.
func (p *Plugins) Block(name string) PluginBlock {
	if p != nil {
		if b, ok := p.Plugins[name]; ok {
			return b
		}
	}
	return PluginBlock{Name: name, Config: json.RawMessage("{}")}
}

// Names returns the names of the plugin blocks, sorted.
func (p *Plugins) Names() []string {
	if p == nil {
		return nil
	}
	names := make([]string, 0, len(p.Plugins))
	for n := range p.Plugins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ResolveBackend picks the backend for a new bottle: the --backend flag, then
// BOT_BOTTLE_BACKEND (its value passed in as env), then default_backend from
// plugins.hcl, then "docker". Resume, attach and commit must not use this:
// they use the backend recorded in the bottle's metadata.
func ResolveBackend(flag, env string, p *Plugins) string {
	if s := strings.TrimSpace(flag); s != "" {
		return s
	}
	if s := strings.TrimSpace(env); s != "" {
		return s
	}
	if p != nil && p.DefaultBackend != "" {
		return p.DefaultBackend
	}
	return DefaultBackend
}

var pluginsSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "default_backend"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "plugin", LabelNames: []string{"name"}}, {Type: "credential", LabelNames: []string{"name"}}},
}

var pluginBlockSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{{Name: "path"}, {Name: "sha256"}},
	Blocks:     []hcl.BlockHeaderSchema{{Type: "config"}},
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// parsePlugins parses src as plugins.hcl named filename; relative plugin
// paths are resolved against baseDir.
func parsePlugins(src []byte, filename, baseDir string) (*Plugins, error) {
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, DiagError(diags)
	}
	content, diags := file.Body.Content(pluginsSchema)
	p := &Plugins{Plugins: map[string]PluginBlock{}, File: filename}

	if attr, ok := content.Attributes["default_backend"]; ok {
		var s string
		d := decodeExpr(attr.Expr, &s)
		diags = append(diags, d...)
		if !d.HasErrors() {
			if err := ValidName(s); err != nil {
				diags = append(diags, errorAt(attr.Expr.Range(), "Invalid default_backend", err.Error()))
			} else {
				p.DefaultBackend = s
			}
		}
	}

	var credBlocks hcl.Blocks
	for _, block := range content.Blocks {
		if block.Type == "credential" {
			credBlocks = append(credBlocks, block)
			continue
		}
		b, d := decodePluginBlock(block, baseDir)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if prev, dup := p.Plugins[b.Name]; dup {
			diags = append(diags, errorAt(block.DefRange, "Duplicate plugin block",
				fmt.Sprintf("plugin %q is already defined at %s:%d:%d", b.Name,
					prev.Range.Filename, prev.Range.Start.Line, prev.Range.Start.Column)))
			continue
		}
		p.Plugins[b.Name] = b
	}
	cd := &decoder{}
	p.Credentials = cd.operatorCredentials(credBlocks)
	diags = append(diags, cd.diags...)
	if err := DiagError(diags); err != nil {
		return nil, err
	}
	return p, nil
}

func decodePluginBlock(block *hcl.Block, baseDir string) (PluginBlock, hcl.Diagnostics) {
	b := PluginBlock{Name: block.Labels[0], Range: block.DefRange, Config: json.RawMessage("{}")}
	var diags hcl.Diagnostics
	if err := ValidName(b.Name); err != nil {
		diags = append(diags, errorAt(block.LabelRanges[0], "Invalid plugin name", err.Error()))
	}
	content, d := block.Body.Content(pluginBlockSchema)
	diags = append(diags, d...)

	if attr, ok := content.Attributes["path"]; ok {
		var s string
		d := decodeExpr(attr.Expr, &s)
		diags = append(diags, d...)
		switch {
		case d.HasErrors():
		case s == "":
			diags = append(diags, errorAt(attr.Expr.Range(), "Empty plugin path", "remove path to search for the plugin, or name its binary"))
		case filepath.IsAbs(s):
			b.Path = filepath.Clean(s)
		case baseDir == "":
			diags = append(diags, errorAt(attr.Expr.Range(), "Relative plugin path", "there is no directory to resolve it against; use an absolute path"))
		default:
			b.Path = filepath.Join(baseDir, s)
		}
	}

	if attr, ok := content.Attributes["sha256"]; ok {
		var s string
		d := decodeExpr(attr.Expr, &s)
		diags = append(diags, d...)
		if !d.HasErrors() {
			s = strings.ToLower(strings.TrimSpace(s))
			if !sha256RE.MatchString(s) {
				diags = append(diags, errorAt(attr.Expr.Range(), "Invalid sha256", "want 64 hexadecimal digits, as printed by sha256sum"))
			} else {
				b.SHA256 = s
			}
		}
	}

	for i, cb := range content.Blocks {
		if i > 0 {
			diags = append(diags, errorAt(cb.DefRange, "Duplicate config block",
				fmt.Sprintf("plugin %q may have only one config block", b.Name)))
			continue
		}
		raw, keys, d := configJSON(cb.Body)
		diags = append(diags, d...)
		if !d.HasErrors() {
			b.Config, b.ConfigKeys = raw, keys
		}
	}
	return b, diags
}

// configJSON turns a free-form config block into a JSON object. Its schema
// belongs to the plugin, not to us, so any attribute is accepted; only
// literal values are, since there is nothing to evaluate references against.
func configJSON(body hcl.Body) (json.RawMessage, map[string]hcl.Range, hcl.Diagnostics) {
	attrs, diags := body.JustAttributes()
	vals := make(map[string]cty.Value, len(attrs))
	keys := make(map[string]hcl.Range, len(attrs))
	for name, attr := range attrs {
		keys[name] = attr.Range
		v, d := attr.Expr.Value(nil)
		diags = append(diags, d...)
		if !d.HasErrors() {
			vals[name] = v
		}
	}
	if diags.HasErrors() {
		return nil, nil, diags
	}
	obj := cty.ObjectVal(vals)
	raw, err := ctyjson.Marshal(obj, obj.Type())
	if err != nil {
		rng := body.MissingItemRange()
		return nil, nil, append(diags, errorAt(rng, "Invalid config block", err.Error()))
	}
	return raw, keys, diags
}
