package sdk

import (
	"encoding/json"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// ServeOption tunes Serve.
type ServeOption func(*serveConfig)

type serveConfig struct {
	logger       hclog.Logger
	parentPoll   time.Duration
	exitOnOrphan bool
}

// WithLogger sets the logger go-plugin uses inside the plugin. It must write
// JSON to stderr (NewLogger does) so the core can show it under the plugin's
// name.
func WithLogger(l hclog.Logger) ServeOption {
	return func(c *serveConfig) { c.logger = l }
}

// NewLogger returns the logger a plugin should use: JSON lines on stderr, at
// the level the core asked for (the core sets BOT_BOTTLE_PLUGIN_LOG_LEVEL).
func NewLogger(name string) hclog.Logger {
	level := hclog.LevelFromString(os.Getenv("BOT_BOTTLE_PLUGIN_LOG_LEVEL"))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
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
		HandshakeConfig:  Handshake,
		VersionedPlugins: ServerPluginSets(impl),
		GRPCServer:       grpcServerFactory,
		Logger:           cfg.logger,
	})
}

// watchParent exits when this process is re-parented, which is how an orphan
// notices its parent died (go-plugin itself leaves orphans behind).
func watchParent(ppid int, every time.Duration, log hclog.Logger) {
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
// JSON, into the plugin process, so that calls without a Spec (Info, List,
// Stop by identity) can use it too.
const EnvPluginConfig = "BOT_BOTTLE_PLUGIN_CONFIG"

// PluginConfig returns the plugin's config block as the core passed it at
// process start ({} when there is none). Spec.Config carries the same.
func PluginConfig() json.RawMessage {
	if v := os.Getenv(EnvPluginConfig); v != "" {
		return json.RawMessage(v)
	}
	return json.RawMessage("{}")
}

// EnvHomeID carries a short id of the core's BOT_BOTTLE_HOME into the plugin
// process.
const EnvHomeID = "BOT_BOTTLE_HOME_ID"

// HomeID identifies the bot-bottle home the plugin serves, or "" when the
// core did not say. Backends label what they create with LabelHome=HomeID()
// and List (and Stop by identity) only what carries the same value, so that
// bottles of another home on the same engine are never reported or pruned.
func HomeID() string { return os.Getenv(EnvHomeID) }
