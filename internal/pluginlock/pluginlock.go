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
// required. Writers edit the file in place: they change, add or remove only
// the plugin blocks that changed, and keep everything else (comments, blocks
// and attributes a newer bot-bottle added). Writes are atomic (temp file,
// fsync, rename) and read-modify-write cycles run under a cross-process file
// lock (WithLock), so two installs at once never lose an entry.
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
	// src is the file as read (nil when there was none); Format edits it.
	src []byte
}

// Source is the lock file's content as it was read, or nil when there was
// no file.
func (l *Lock) Source() []byte {
	if l == nil {
		return nil
	}
	return l.src
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
	l := &Lock{File: filename, Entries: map[string]Entry{}, src: src}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, config.DiagError(diags)
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
	if err := config.DiagError(diags); err != nil {
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

const header = `# This file is maintained by "bot-bottle plugins install"; edit it only to
# remove a plugin. It records every plugin installed in $BOT_BOTTLE_HOME/plugins
# with the sha256 its binary must still have: bot-bottle refuses to run an
# installed plugin that changed since it was installed. It may be committed,
# to review or share the exact set of plugins in use.
`

// Format renders l as a lock file. A lock without a source (no file yet)
// becomes the header and one block per plugin, sorted by name. A lock read
// from a file is that file edited: blocks of plugins whose entry changed get
// their known attributes set in place (other attributes and comments stay),
// new plugins get a block inserted before the first one that sorts after
// them, removed plugins lose their block (and its comments), and everything
// else is kept as it was. Unchanged, the source comes back byte for byte.
func Format(l *Lock) ([]byte, error) {
	src := l.src
	if len(bytes.TrimSpace(src)) == 0 {
		src = []byte(header)
	}
	old, err := Parse(src, l.File)
	if err != nil {
		return nil, err
	}
	out := bytes.Clone(src)
	changed := false
	for _, name := range old.Names() {
		if _, keep := l.Entries[name]; !keep {
			if out, err = removeBlock(out, name); err != nil {
				return nil, err
			}
			changed = true
		}
	}
	var updates []Entry
	for _, name := range l.Names() {
		if o, ok := old.Entries[name]; ok && !sameEntry(o, l.Entries[name]) {
			updates = append(updates, l.Entries[name])
		}
	}
	if len(updates) > 0 {
		if out, err = setInPlace(out, updates); err != nil {
			return nil, err
		}
		changed = true
	}
	for _, name := range l.Names() {
		if _, ok := old.Entries[name]; !ok {
			e := l.Entries[name]
			e.Name = name
			if out, err = insertBlock(out, e); err != nil {
				return nil, err
			}
			changed = true
		}
	}
	if !changed {
		return src, nil
	}
	out = hclwrite.Format(out)
	// What was meant is exactly what the edited file says.
	got, err := Parse(out, l.File)
	if err != nil {
		return nil, fmt.Errorf("plugin lock file %s: editing it in place gave a broken file (%v); nothing was written", l.File, err)
	}
	if len(got.Entries) != len(l.Entries) {
		return nil, fmt.Errorf("plugin lock file %s: editing it in place gave %d entries, want %d; nothing was written", l.File, len(got.Entries), len(l.Entries))
	}
	for name, e := range l.Entries {
		if g, ok := got.Entries[name]; !ok || !sameEntry(g, e) {
			return nil, fmt.Errorf("plugin lock file %s: editing it in place lost plugin %q; nothing was written", l.File, name)
		}
	}
	return out, nil
}

func sameEntry(a, b Entry) bool {
	if a.Version != b.Version || a.Protocol != b.Protocol || a.SHA256 != b.SHA256 || len(a.APIVersions) != len(b.APIVersions) {
		return false
	}
	for i := range a.APIVersions {
		if a.APIVersions[i] != b.APIVersions[i] {
			return false
		}
	}
	return true
}

// setAttrs sets the attributes bot-bottle knows in a plugin block's body,
// in their usual order; others are left alone.
func setAttrs(b *hclwrite.Body, e Entry) {
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

// setInPlace sets the known attributes of the existing blocks of updates.
func setInPlace(src []byte, updates []Entry) ([]byte, error) {
	f, diags := hclwrite.ParseConfig(src, "", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, config.DiagError(diags)
	}
	for _, e := range updates {
		b := f.Body().FirstMatchingBlock("plugin", []string{e.Name})
		if b == nil {
			return nil, fmt.Errorf("plugin lock file: no block for plugin %q to update", e.Name)
		}
		setAttrs(b.Body(), e)
	}
	return f.Bytes(), nil
}

// blockText is a new plugin block for e, formatted, without a final newline.
func blockText(e Entry) []byte {
	f := hclwrite.NewEmptyFile()
	setAttrs(f.Body().AppendNewBlock("plugin", []string{e.Name}).Body(), e)
	return bytes.TrimRight(hclwrite.Format(f.Bytes()), "\n")
}

func parseBody(src []byte) (*hclsyntax.Body, error) {
	file, diags := hclsyntax.ParseConfig(src, "", hcl.InitialPos)
	if diags.HasErrors() {
		return nil, config.DiagError(diags)
	}
	return file.Body.(*hclsyntax.Body), nil
}

// pluginBlock is the block of plugin name in body, or nil.
func pluginBlock(body *hclsyntax.Body, name string) *hclsyntax.Block {
	for _, b := range body.Blocks {
		if b.Type == "plugin" && len(b.Labels) == 1 && b.Labels[0] == name {
			return b
		}
	}
	return nil
}

// insertBlock adds e's block to src, separated by blank lines, before the
// first plugin block that sorts after it (and that block's comments), else
// after the last plugin block, else at the end.
func insertBlock(src []byte, e Entry) ([]byte, error) {
	body, err := parseBody(src)
	if err != nil {
		return nil, err
	}
	text := blockText(e)
	var next, last *hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type != "plugin" || len(b.Labels) != 1 {
			continue
		}
		if b.Labels[0] > e.Name {
			next = b
			break
		}
		last = b
	}
	var out []byte
	switch {
	case next == nil && last == nil:
		out = bytes.TrimRight(bytes.Clone(src), " \t\r\n")
		if len(out) > 0 {
			out = append(out, "\n\n"...)
		}
		out = append(out, text...)
		return append(out, '\n'), nil
	case next == nil:
		// Right after the last plugin block (and the rest of its line).
		q := lineEnd(src, last.Range().End.Byte)
		out = append(out, src[:q]...)
		if !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		out = append(out, '\n')
		out = append(out, text...)
		out = append(out, '\n')
		rest := src[q:]
		if i := bytes.IndexByte(rest, '\n'); len(rest) > 0 && (i < 0 || len(bytes.TrimSpace(rest[:i])) > 0) {
			out = append(out, '\n')
		}
		return append(out, rest...), nil
	}
	p := leadStart(src, body, next)
	out = append(out, src[:p]...)
	if p > 0 && !bytes.HasSuffix(out, []byte("\n\n")) {
		out = append(out, '\n')
	}
	out = append(out, text...)
	out = append(out, "\n\n"...)
	return append(out, src[p:]...), nil
}

// removeBlock cuts plugin name's block from src: its lead comments, the
// block, the rest of its last line and one blank line after it when one
// precedes it too.
func removeBlock(src []byte, name string) ([]byte, error) {
	body, err := parseBody(src)
	if err != nil {
		return nil, err
	}
	b := pluginBlock(body, name)
	if b == nil {
		return src, nil
	}
	p := leadStart(src, body, b)
	end := lineEnd(src, b.Range().End.Byte)
	if p == 0 || bytes.HasSuffix(src[:p], []byte("\n\n")) {
		if i := bytes.IndexByte(src[end:], '\n'); i >= 0 && len(bytes.TrimSpace(src[end:end+i])) == 0 {
			end += i + 1
		}
	}
	out := append(bytes.Clone(src[:p]), src[end:]...)
	return out, nil
}

// lineEnd is the start of the line after the one holding offset, or the
// end of src.
func lineEnd(src []byte, offset int) int {
	if i := bytes.IndexByte(src[offset:], '\n'); i >= 0 {
		return offset + i + 1
	}
	return len(src)
}

// leadStart is where block b's text starts in src, its lead comments
// included: the start of its line, moved up over the lines right above it
// that are not blank and hold nothing of an earlier item (between two top
// level items there can only be comments).
func leadStart(src []byte, body *hclsyntax.Body, b *hclsyntax.Block) int {
	start := b.Range().Start.Byte
	lower := 0
	for _, a := range body.Attributes {
		if e := a.SrcRange.End.Byte; e <= start && e > lower {
			lower = e
		}
	}
	for _, o := range body.Blocks {
		if e := o.Range().End.Byte; e <= start && e > lower {
			lower = e
		}
	}
	p := bytes.LastIndexByte(src[:start], '\n') + 1
	if p < lower {
		return start
	}
	for p > lower {
		prevStart := bytes.LastIndexByte(src[:p-1], '\n') + 1
		if prevStart < lower || len(bytes.TrimSpace(src[prevStart:p-1])) == 0 {
			break
		}
		p = prevStart
	}
	return p
}

// Write replaces the lock file at path with Format(l), atomically: a temp
// file in the same directory, fsync, rename, fsync of the directory.
// Callers that read, change and write should hold WithLock.
func Write(path string, l *Lock) error {
	out, err := Format(l)
	if err != nil {
		return fmt.Errorf("write plugin lock file: %w", err)
	}
	if err := renameio.WriteFile(path, out, 0o644); err != nil {
		return fmt.Errorf("write plugin lock file: %w", err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("write plugin lock file: %w", err)
	}
	l.src = out
	return nil
}

// Restore puts the lock file at path back to src, what Source returned
// before a Write that failed, possibly after its rename; nil src removes
// the file (there was none). A file already as it was is left alone.
func Restore(path string, src []byte) error {
	cur, err := os.ReadFile(path)
	if src == nil {
		if err == nil {
			if err := os.Remove(path); err != nil {
				return fmt.Errorf("restore plugin lock file: %w", err)
			}
			return SyncDir(filepath.Dir(path))
		}
		return nil
	}
	if err == nil && bytes.Equal(cur, src) {
		return nil
	}
	if err := renameio.WriteFile(path, src, 0o644); err != nil {
		return fmt.Errorf("restore plugin lock file: %w", err)
	}
	return SyncDir(filepath.Dir(path))
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
