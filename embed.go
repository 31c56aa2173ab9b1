// Package botbottle holds the files the bot-bottle binary embeds from the
// repository root: the default plugins.hcl and the built-in agents.
package botbottle

import "embed"

// DefaultPluginsHCL is the configuration used when the user has none.
//
//go:embed plugins.hcl
var DefaultPluginsHCL []byte

// BuiltinAgents holds agents/<name>/agent.hcl and their build contexts.
//
//go:embed all:agents
var BuiltinAgents embed.FS
