package sdk

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	"github.com/bot-bottle/bot-bottle/sdk/internal/wire"
)

// ServeOption tunes Serve.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger       *slog.Logger
	parentPoll   time.Duration
	exitOnOrphan bool
}

// WithLogger sets the logger the SDK itself logs to inside the plugin (a
// parent that went away, say). Give it the logger NewLogger returns, which
// the core understands; it is nil-safe to leave out.
func WithLogger(l *slog.Logger) ServeOption {
	return func(c *serveConfig) { c.logger = l }
}

// EnvLogLevel carries the core's log level ("trace", "debug", "info", "warn"
// or "error") into the plugin process.
const EnvLogLevel = "BOT_BOTTLE_PLUGIN_LOG_LEVEL"

// LevelTrace is below slog.LevelDebug: the core's "trace".
const LevelTrace = slog.LevelDebug - 4

// NewLogger returns the logger a plugin should use: JSON lines on stderr in
// the shape the core reads (@level, @message, @timestamp, @module), at the
// level the core asked for in EnvLogLevel (info when it did not). The core
// shows each line under the plugin's name, at its level.
func NewLogger(name string) *slog.Logger {
	return newLogger(os.Stderr, name, levelFromString(os.Getenv(EnvLogLevel)))
}

func newLogger(w io.Writer, name string, level slog.Level) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: hclogShape})
	return slog.New(h).With("@module", name)
}

// hclogShape renames slog's built-in keys to the ones go-plugin parses on
// the core's side; any other shape is shown as one unparsed debug line.
func hclogShape(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String("@timestamp", a.Value.Time().Format("2006-01-02T15:04:05.000000Z07:00"))
	case slog.LevelKey:
		return slog.String("@level", levelName(a.Value.Any().(slog.Level)))
	case slog.MessageKey:
		return slog.String("@message", a.Value.String())
	}
	return a
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	}
	return "error"
}

func levelFromString(s string) slog.Level {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "trace":
		return LevelTrace
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Serve runs impl as a bot-bottle backend plugin and does not return. Call it
// from main, and print nothing to stdout before it: stdout carries the
// go-plugin handshake line.
//
// Serve exits the process when the process that started it dies, even by
// SIGKILL, so no plugin outlives its core.
func Serve(impl Backend, opts ...ServeOption) {
	cfg := serveConfig{parentPoll: 250 * time.Millisecond, exitOnOrphan: true}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = NewLogger("plugin")
	}
	if cfg.exitOnOrphan {
		go watchParent(os.Getppid(), cfg.parentPoll, cfg.logger)
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  wire.Handshake(),
		VersionedPlugins: serverPluginSets(impl),
		GRPCServer:       wire.ServerFactory,
		// The certificates the core made for this start, or none (a core
		// of an earlier SDK: go-plugin's AutoMTLS).
		TLSProvider: wire.ServerTLS,
		// go-plugin's own lines (its listener, a failed accept), in the
		// shape the core reads.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       "go-plugin",
			Level:      hclog.LevelFromString(levelName(levelFromString(os.Getenv(EnvLogLevel)))),
			Output:     os.Stderr,
			JSONFormat: true,
		}),
	})
}

// watchParent exits when this process is re-parented, which is how an orphan
// notices its parent died (go-plugin itself leaves orphans behind).
func watchParent(ppid int, every time.Duration, log *slog.Logger) {
	if ppid <= 1 {
		return
	}
	for {
		time.Sleep(every)
		if os.Getppid() != ppid {
			log.Warn("parent process exited; plugin exiting", "parent_pid", ppid)
			os.Exit(2)
		}
	}
}

// EnvPluginConfig carries the plugin's config block from plugins.hcl, as
// JSON, into the plugin process. It is the only way config reaches a
// plugin: it is there for every call, including those without a Spec (Info,
// List, Stop by identity).
const EnvPluginConfig = "BOT_BOTTLE_PLUGIN_CONFIG"

// PluginConfig returns the plugin's config block as the core passed it at
// process start ({} when there is none). Read it once, in main, and refuse
// to serve (exit non-zero with a one-line message on stderr) when it does not
// parse: the core shows that message. An error about one key that says
// "config: KEY …" (as in "docker plugin config: memory \"x\" is not a
// size") is shown with the plugins.hcl file:line of that key.
func PluginConfig() json.RawMessage {
	if v := os.Getenv(EnvPluginConfig); v != "" {
		return json.RawMessage(v)
	}
	return json.RawMessage("{}")
}

// EnvHomeID carries a short id of the core's BOT_BOTTLE_HOME into the plugin
// process.
const EnvHomeID = "BOT_BOTTLE_HOME_ID"

// HomeID identifies the bot-bottle home the plugin serves. Backends label
// what they create with LabelHome=HomeID() and List (and Stop by identity)
// only what carries the same value, so that bottles of another home on the
// same engine are never reported or pruned.
//
// The core always sets it: a lower-case hex digest of the home's path, so
// a valid name (ValidName) usable in labels and paths. It is "" only when
// something other than the core started the plugin, such as a test harness;
// then there is no home to keep apart, and the backends in this repository
// put no LabelHome on what they create and list every bottle they manage.
func HomeID() string { return os.Getenv(EnvHomeID) }
