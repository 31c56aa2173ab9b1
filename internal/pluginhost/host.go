// Package pluginhost finds backend plugin binaries, verifies them, starts them
// over go-plugin and turns their failures into clear errors. It is the only
// code in the core that knows plugins are processes.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/internal/config"
	"github.com/bot-bottle/bot-bottle/sdk"
)

// BinaryPrefix starts the file name of every backend plugin.
const BinaryPrefix = "bot-bottle-plugin-"

// ErrNotInstalled is wrapped by Find when no binary of that name exists.
var ErrNotInstalled = errors.New("plugin not installed")

// SupportedAPIVersions are the sdk API major versions this core can drive.
var supportedAPIMajors = []string{"1"}

// Host finds and starts plugins.
type Host struct {
	Home   string          // BOT_BOTTLE_HOME
	Config *config.Plugins // plugins.hcl
	ExeDir string          // directory of the running bot-bottle binary
	Logger hclog.Logger    // plugin logs appear under Logger.Named(plugin)
	Getenv func(string) string
}

// Found is one plugin binary on disk.
type Found struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Source string `json:"source"`
	// Pinned is the sha256 plugins.hcl pins, if any; Actual is the binary's.
	Pinned   string `json:"sha256_pinned,omitempty"`
	Actual   string `json:"sha256"`
	Checksum string `json:"checksum"` // "ok", "mismatch" or "not pinned"
}

func (h *Host) getenv(k string) string {
	if h.Getenv != nil {
		return h.Getenv(k)
	}
	return os.Getenv(k)
}

type searchDir struct{ dir, source string }

func (h *Host) searchDirs() []searchDir {
	dirs := []searchDir{{filepath.Join(h.Home, "plugins"), "$BOT_BOTTLE_HOME/plugins"}}
	if h.ExeDir != "" {
		dirs = append(dirs, searchDir{h.ExeDir, "next to bot-bottle"})
	}
	for _, d := range filepath.SplitList(h.getenv("PATH")) {
		if d != "" {
			dirs = append(dirs, searchDir{d, "$PATH"})
		}
	}
	return dirs
}

// Find locates the binary of plugin name: path in plugins.hcl, then
// $BOT_BOTTLE_HOME/plugins, then next to bot-bottle, then $PATH.
func (h *Host) Find(name string) (Found, error) {
	block := h.block(name)
	if block.Path != "" {
		if err := isExecutable(block.Path); err != nil {
			return Found{}, fmt.Errorf("plugin %q: path %s from %s: %w", name, block.Path, h.Config.File, err)
		}
		return h.found(name, block.Path, "plugins.hcl path", block.SHA256)
	}
	var looked []string
	for _, d := range h.searchDirs() {
		p := filepath.Join(d.dir, BinaryPrefix+name)
		if isExecutable(p) == nil {
			return h.found(name, p, d.source, block.SHA256)
		}
		if len(looked) == 0 || looked[len(looked)-1] != d.source {
			looked = append(looked, d.source)
		}
	}
	return Found{}, &notFoundError{fmt.Sprintf("plugin %q not found: no executable %s%s in %s (set path in a plugin %q block of plugins.hcl, or install it in %s)",
		name, BinaryPrefix, name, strings.Join(looked, ", "), name, filepath.Join(h.Home, "plugins"))}
}

// Discover lists every plugin binary it can find, the first of each name
// winning, plus plugins named in plugins.hcl with a path.
func (h *Host) Discover() ([]Found, []error) {
	seen := map[string]bool{}
	var out []Found
	var errs []error
	if h.Config != nil {
		names := make([]string, 0, len(h.Config.Plugins))
		for n, b := range h.Config.Plugins {
			if b.Path != "" {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			f, err := h.Find(n)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			seen[n] = true
			out = append(out, f)
		}
	}
	for _, d := range h.searchDirs() {
		entries, err := os.ReadDir(d.dir)
		if err != nil {
			continue
		}
		for _, e := range entries {
			n, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || n == "" || seen[n] {
				continue
			}
			p := filepath.Join(d.dir, e.Name())
			if isExecutable(p) != nil {
				continue
			}
			seen[n] = true
			f, err := h.found(n, p, d.source, h.block(n).SHA256)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, f)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

func (h *Host) block(name string) config.PluginBlock {
	if h.Config == nil {
		return config.PluginBlock{Name: name}
	}
	return h.Config.Block(name)
}

// found describes a plugin binary. Hashing a plugin costs more than
// starting it, so only pinned binaries are hashed here; Checksum fills in
// the rest for `bot-bottle plugins`.
func (h *Host) found(name, path, source, pinned string) (Found, error) {
	f := Found{Name: name, Path: path, Source: source, Pinned: strings.ToLower(pinned), Checksum: "not pinned"}
	if pinned == "" {
		return f, nil
	}
	if err := f.hash(); err != nil {
		return Found{}, err
	}
	f.Checksum = "ok"
	if f.Pinned != f.Actual {
		f.Checksum = "mismatch"
	}
	return f, nil
}

func (f *Found) hash() error {
	if f.Actual != "" {
		return nil
	}
	sum, err := fileSHA256(f.Path)
	if err != nil {
		return fmt.Errorf("plugin %q: %w", f.Name, err)
	}
	f.Actual = sum
	return nil
}

// WithChecksum returns f with its binary's sha256 filled in.
func WithChecksum(f Found) (Found, error) {
	err := f.hash()
	return f, err
}

func isExecutable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return errors.New("is a directory")
	}
	if fi.Mode()&0o111 == 0 {
		return errors.New("is not executable")
	}
	return nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Plugin is a running plugin process.
type Plugin struct {
	Name    string
	Path    string
	Info    sdk.Info
	Backend *sdk.Client
	// Protocol is the go-plugin protocol version negotiated.
	Protocol int
	client   *plugin.Client
}

// Close stops the plugin process and waits for it.
func (p *Plugin) Close() {
	if p != nil && p.client != nil {
		p.client.Kill()
	}
}

// Exited reports whether the plugin process is gone.
func (p *Plugin) Exited() bool { return p.client.Exited() }

// Pid is the plugin's process id, or 0.
func (p *Plugin) Pid() int {
	if rc := p.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// Wrap prefixes err with the plugin's name, the way every plugin error
// reaches the user.
func (p *Plugin) Wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s plugin: %w", p.Name, err)
}

// InfoTimeout bounds the handshake and the Info call.
const InfoTimeout = 15 * time.Second

// Start finds, verifies and starts plugin name, and asks it for its Info.
func (h *Host) Start(ctx context.Context, name string) (*Plugin, error) {
	f, err := h.Find(name)
	if err != nil {
		return nil, err
	}
	return h.StartFound(ctx, f)
}

// StartFound starts a plugin found by Find or Discover.
func (h *Host) StartFound(ctx context.Context, f Found) (*Plugin, error) {
	if f.Checksum == "mismatch" {
		return nil, fmt.Errorf("plugin %q: checksum mismatch: %s has sha256 %s but plugins.hcl pins %s; refusing to run it", f.Name, f.Path, f.Actual, f.Pinned)
	}
	logger := h.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cmd := exec.Command(f.Path)
	cmd.Env = append(os.Environ(), "BOT_BOTTLE_PLUGIN_LOG_LEVEL="+logLevelName(logger))
	if id := HomeID(h.Home); id != "" {
		cmd.Env = append(cmd.Env, sdk.EnvHomeID+"="+id)
	}
	if cfg := h.block(f.Name).Config; len(cfg) > 0 {
		cmd.Env = append(cmd.Env, sdk.EnvPluginConfig+"="+string(cfg))
	}
	// Its own process group: a Ctrl-C at the terminal is for the agent or for
	// bot-bottle, which tears down in order; it must not kill the plugin first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cfg := &plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		VersionedPlugins: sdk.ClientPluginSets(),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		GRPCDialOptions:  sdk.GRPCDialOptions(),
		Logger:           logger.Named(f.Name),
		StartTimeout:     InfoTimeout,
		UnixSocketConfig: &plugin.UnixSocketConfig{TempDir: shortTempDir()},
	}
	if f.Pinned != "" {
		sum, _ := hex.DecodeString(f.Pinned)
		cfg.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	pc := plugin.NewClient(cfg)
	client, proto, err := sdk.Dispense(pc)
	if err != nil {
		pc.Kill()
		return nil, fmt.Errorf("%s plugin (%s): start: %w", f.Name, f.Path, err)
	}
	p := &Plugin{Name: f.Name, Path: f.Path, Backend: client, Protocol: proto, client: pc}
	ictx, cancel := context.WithTimeout(ctx, InfoTimeout)
	defer cancel()
	info, err := client.Info(ictx)
	if err != nil {
		p.Close()
		return nil, p.Wrap(err)
	}
	if !apiCompatible(info.APIVersions) {
		p.Close()
		return nil, fmt.Errorf("%s plugin: speaks API %s, this bot-bottle speaks %s.x; rebuild the plugin against a matching sdk",
			f.Name, strings.Join(info.APIVersions, ", "), strings.Join(supportedAPIMajors, ", "))
	}
	p.Info = info
	return p, nil
}

func apiCompatible(vs []string) bool {
	for _, v := range vs {
		major, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), ".")
		for _, m := range supportedAPIMajors {
			if major == m {
				return true
			}
		}
	}
	return false
}

func logLevelName(l hclog.Logger) string {
	switch {
	case l.IsTrace():
		return "trace"
	case l.IsDebug():
		return "debug"
	case l.IsInfo():
		return "info"
	case l.IsWarn():
		return "warn"
	}
	return "error"
}

// shortTempDir keeps go-plugin's unix socket path under the 104/108-byte
// limit even when TMPDIR is deep (a classic source of vague start errors).
func shortTempDir() string {
	d := os.TempDir()
	if len(d) > 60 {
		return "/tmp"
	}
	return d
}

type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }
func (e *notFoundError) Unwrap() error { return ErrNotInstalled }

// HomeID is the short, stable id of a bot-bottle home that plugins label
// resources with (sdk.LabelHome).
func HomeID(home string) string {
	if home == "" {
		return ""
	}
	if abs, err := filepath.Abs(home); err == nil {
		home = abs
	}
	sum := sha256.Sum256([]byte(home))
	return hex.EncodeToString(sum[:6])
}
