// Package pluginlock reads and writes $BOT_BOTTLE_HOME/plugins.lock.hcl, the
// record `bot-bottle plugins install` keeps of the plugins it installed into
// $BOT_BOTTLE_HOME/plugins: name, version, protocol and API versions, and the
// sha256 the binary must still have when it is run.
//
//	plugin "skeleton" {
//	  version      = "0.1.0"
//	  protocol     = 1
//	  api_versions = ["1.0.0"]
//	  sha256       = "…64 hex…"
//	}
//
// Readers tolerate attributes and blocks they do not know; only sha256 is
// required. Writes are atomic (temp file, fsync, rename) and read-modify-write
// cycles run under a cross-process file lock (WithLock), so two installs at
// once never lose an entry.
package pluginlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/gofrs/flock"
	"github.com/google/renameio/v2"
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"

	"github.com/bot-bottle/bot-bottle/internal/config"
)

// FileName is the lock file's name in $BOT_BOTTLE_HOME.
const FileName = "plugins.lock.hcl"

// maxSize bounds what Read accepts; a real lock file is a few hundred bytes
// per plugin.
const maxSize = 1 << 20

// lockTimeout bounds the wait for another install to finish (a variable
// for tests).
var lockTimeout = 30 * time.Second

// Path is the lock file of home.
func Path(home string) string { return filepath.Join(home, FileName) }

// Entry is one plugin's block.
type Entry struct {
	Name        string   `json:"name"`
	Version     string   `json:"version,omitempty"`
	Protocol    int      `json:"protocol,omitempty"`
	APIVersions []string `json:"api_versions,omitempty"`
	SHA256      string   `json:"sha256"`
	// Line is where the block starts in the file it was read from (0 when
	// it was not read from a file).
	Line int `json:"-"`
}

// Lock is a parsed lock file.
type Lock struct {
	File    string           // path it was read from, for messages
	Entries map[string]Entry // by plugin name
}

// Names returns the locked plugin names, sorted. A nil Lock has none.
func (l *Lock) Names() []string {
	if l == nil {
		return nil
	}
	names := make([]string, 0, len(l.Entries))
	for n := range l.Entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Get returns the entry of name, if any. A nil Lock has none.
func (l *Lock) Get(name string) (Entry, bool) {
	if l == nil {
		return Entry{}, false
	}
	e, ok := l.Entries[name]
	return e, ok
}

// Read reads the lock file at path. A missing file is an empty lock; a
// broken one is an error of one line naming file:line:col.
func Read(path string) (*Lock, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Lock{File: path, Entries: map[string]Entry{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read plugin lock file: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("plugin lock file %s is not a regular file", path)
	}
	src, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read plugin lock file %s: %w", path, err)
	}
	if len(src) > maxSize {
		return nil, fmt.Errorf("plugin lock file %s is larger than %d bytes", path, maxSize)
	}
	return Parse(src, path)
}

var (
	fileSchema = &hcl.BodySchema{
		Blocks: []hcl.BlockHeaderSchema{{Type: "plugin", LabelNames: []string{"name"}}},
	}
	entrySchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "version"}, {Name: "protocol"}, {Name: "api_versions"}, {Name: "sha256", Required: true},
		},
	}
	sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Parse parses src as a lock file named filename.
func Parse(src []byte, filename string) (*Lock, error) {
	l := &Lock{File: filename, Entries: map[string]Entry{}}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diagErr(diags)
	}
	// Partial: a newer bot-bottle may add blocks or attributes; this one
	// reads what it knows and keeps the rest out of its way.
	content, _, diags := file.Body.PartialContent(fileSchema)
	for _, block := range content.Blocks {
		e, d := decodeEntry(block)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		if prev, dup := l.Entries[e.Name]; dup {
			diags = append(diags, errorAt(block.DefRange, "Duplicate plugin block",
				fmt.Sprintf("plugin %q is already locked at line %d", e.Name, prev.Line)))
			continue
		}
		l.Entries[e.Name] = e
	}
	if err := diagErr(diags); err != nil {
		return nil, err
	}
	return l, nil
}

func decodeEntry(block *hcl.Block) (Entry, hcl.Diagnostics) {
	e := Entry{Name: block.Labels[0], Line: block.DefRange.Start.Line}
	var diags hcl.Diagnostics
	if err := config.ValidName(e.Name); err != nil {
		diags = append(diags, errorAt(block.LabelRanges[0], "Invalid plugin name", err.Error()))
	}
	content, _, d := block.Body.PartialContent(entrySchema)
	diags = append(diags, d...)
	if a, ok := content.Attributes["version"]; ok {
		diags = append(diags, decodeExpr(a.Expr, &e.Version)...)
	}
	if a, ok := content.Attributes["protocol"]; ok {
		d := decodeExpr(a.Expr, &e.Protocol)
		diags = append(diags, d...)
		if !d.HasErrors() && e.Protocol < 0 {
			diags = append(diags, errorAt(a.Expr.Range(), "Invalid protocol", "want a plugin protocol version, 1 or more"))
		}
	}
	if a, ok := content.Attributes["api_versions"]; ok {
		diags = append(diags, decodeExpr(a.Expr, &e.APIVersions)...)
	}
	if a, ok := content.Attributes["sha256"]; ok {
		var s string
		d := decodeExpr(a.Expr, &s)
		diags = append(diags, d...)
		if !d.HasErrors() {
			s = strings.ToLower(strings.TrimSpace(s))
			if !sha256RE.MatchString(s) {
				diags = append(diags, errorAt(a.Expr.Range(), "Invalid sha256", "want 64 hexadecimal digits"))
			}
			e.SHA256 = s
		}
	}
	return e, diags
}

// decodeExpr decodes a literal expression into target; a reference or a
// function call is reported as such.
func decodeExpr(expr hcl.Expression, target any) hcl.Diagnostics {
	if _, diags := expr.Value(nil); diags.HasErrors() {
		return diags
	}
	return gohcl.DecodeExpression(expr, nil, target)
}

func errorAt(rng hcl.Range, summary, detail string) *hcl.Diagnostic {
	r := rng
	return &hcl.Diagnostic{Severity: hcl.DiagError, Summary: summary, Detail: detail, Subject: &r}
}

// diagErr is the one-line error of diags (the first problem in file order,
// as file:line:col, and how many more there are), or nil.
func diagErr(diags hcl.Diagnostics) error {
	if !diags.HasErrors() {
		return nil
	}
	sorted := append(hcl.Diagnostics(nil), diags...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i].Subject, sorted[j].Subject
		if a == nil || b == nil {
			return a != nil && b == nil
		}
		return a.Start.Byte < b.Start.Byte
	})
	return &config.HCLError{Diagnostics: sorted}
}

const header = `# This file is maintained by "bot-bottle plugins install"; edit it only to
# remove a plugin. It records every plugin installed in $BOT_BOTTLE_HOME/plugins
# with the sha256 its binary must still have: bot-bottle refuses to run an
# installed plugin that changed since it was installed. It may be committed,
# to review or share the exact set of plugins in use.
`

// Format renders l as a lock file: the header, then one block per plugin
// sorted by name.
func Format(l *Lock) []byte {
	f := hclwrite.NewEmptyFile()
	body := f.Body()
	for i, name := range l.Names() {
		e := l.Entries[name]
		if i > 0 {
			body.AppendNewline()
		}
		b := body.AppendNewBlock("plugin", []string{name}).Body()
		b.SetAttributeValue("version", cty.StringVal(e.Version))
		b.SetAttributeValue("protocol", cty.NumberIntVal(int64(e.Protocol)))
		vs := make([]cty.Value, 0, len(e.APIVersions))
		for _, v := range e.APIVersions {
			vs = append(vs, cty.StringVal(v))
		}
		if len(vs) == 0 {
			b.SetAttributeValue("api_versions", cty.ListValEmpty(cty.String))
		} else {
			b.SetAttributeValue("api_versions", cty.ListVal(vs))
		}
		b.SetAttributeValue("sha256", cty.StringVal(e.SHA256))
	}
	var out bytes.Buffer
	out.WriteString(header)
	if len(l.Entries) > 0 {
		out.WriteString("\n")
	}
	out.Write(hclwrite.Format(f.Bytes()))
	return out.Bytes()
}

// Write replaces the lock file at path with l, atomically: a temp file in
// the same directory, fsync, rename, fsync of the directory. Callers that
// read, change and write should hold WithLock.
func Write(path string, l *Lock) error {
	if err := renameio.WriteFile(path, Format(l), 0o644); err != nil {
		return fmt.Errorf("write plugin lock file: %w", err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write plugin lock file: %w", err)
	}
	return nil
}

// SyncDir fsyncs a directory so that a rename in it survives a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WithLock runs fn holding the cross-process lock of home's plugin lock
// file ($BOT_BOTTLE_HOME/locks/plugins.lock), waiting up to 30 s for
// another holder. A lock it acquired is always released, also when ctx ends
// just as it is acquired (then fn does not run).
func WithLock(ctx context.Context, home string, fn func() error) error {
	dir := filepath.Join(home, "locks")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("lock %s: %w", FileName, err)
	}
	fl := flock.New(filepath.Join(dir, "plugins.lock"), flock.SetPermissions(0o600))
	wait, cancel := context.WithTimeout(ctx, lockTimeout)
	defer cancel()
	ok, err := tryLock(wait, fl)
	if ok {
		defer fl.Unlock()
		// Only the caller's end counts now: the wait is over.
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("lock %s: %w", FileName, err)
		}
		return fn()
	}
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("lock %s: %w", FileName, ctx.Err())
	case errors.Is(wait.Err(), context.DeadlineExceeded):
		return fmt.Errorf("lock %s: another bot-bottle plugins install held it for %s", FileName, lockTimeout)
	default:
		return fmt.Errorf("lock %s (%s): %v", FileName, fl.Path(), err)
	}
}

// tryLock waits for fl until ctx ends; a test replaces it to acquire the
// lock just as ctx expires.
var tryLock = func(ctx context.Context, fl *flock.Flock) (bool, error) {
	return fl.TryLockContext(ctx, 10*time.Millisecond)
}

// Update reads home's lock file, applies change and writes it back, all
// under WithLock.
func Update(ctx context.Context, home string, change func(*Lock) error) error {
	return WithLock(ctx, home, func() error {
		l, err := Read(Path(home))
		if err != nil {
			return err
		}
		if err := change(l); err != nil {
			return err
		}
		return Write(Path(home), l)
	})
}
